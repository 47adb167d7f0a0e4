"""A scripted TOP gateway for client tests: a real aiohttp server on 127.0.0.1 that merges query and
form parameters, checks the signature with `taobao.signing.verify`, records every request and answers
from a script (then from a default reply)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from taobao.envelope import response_key
from taobao.signing import verify

SECRET = "test-app-secret-Zq9"
APP_KEY = "12345678"
SESSION = "6100e23sessionKEY+/=9"  # characters that URL encoding changes


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # never answer (until the gateway is released)


@dataclass(frozen=True)
class Request:
    query: dict[str, str]
    form: dict[str, str]
    signed: bool
    at: float  # time.monotonic() on arrival
    headers: dict[str, str]
    url: str = ""  # path and query string as sent

    @property
    def params(self) -> dict[str, str]:
        return {**self.form, **self.query}


def ok(method: str, payload: dict[str, Any], *, simplified: bool = False) -> Reply:
    document = payload if simplified else {response_key(method): {**payload, "request_id": "ej6ptuzf712n"}}
    return Reply(body=json.dumps(document).encode())


def error(code: int, msg: str = "error", sub_code: str | None = None, sub_msg: str | None = None) -> Reply:
    fields: dict[str, Any] = {"code": code, "msg": msg, "request_id": "16kksr4el1bs0"}
    if sub_code is not None:
        fields["sub_code"] = sub_code
    if sub_msg is not None:
        fields["sub_msg"] = sub_msg
    return Reply(body=json.dumps({"error_response": fields}).encode())


def ban(seconds: int) -> Reply:
    return error(
        7,
        "App Call Limited",
        "accesscontrol.limited-by-api-access-count",
        f"This ban will last for {seconds} more seconds",
    )


def trade_reply(tid: int, **fields: Any) -> Reply:
    trade = {"tid": tid, "status": "WAIT_SELLER_SEND_GOODS", "modified": "2024-05-01 12:30:05", **fields}
    return ok("taobao.trade.fullinfo.get", {"trade": trade})


class ScriptedGateway:
    def __init__(self, secret: str = SECRET) -> None:
        self.secret = secret
        self.requests: list[Request] = []
        self.script: deque[Reply] = deque()
        self.default: Callable[[Request], Reply] = lambda request: error(22, "Invalid Method")
        self.release = asyncio.Event()
        self.files: dict[str, Reply] = {}

    def reset(self) -> None:
        self.requests.clear()
        self.script.clear()
        self.default = lambda request: error(22, "Invalid Method")
        self.release = asyncio.Event()
        self.files.clear()

    def then(self, *replies: Reply) -> None:
        self.script.extend(replies)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/router/rest", self._handle)
        app.router.add_route("*", "/files/{name}", self._handle_file)
        return app

    async def _handle(self, http: web.Request) -> web.StreamResponse:
        form = {k: str(v) for k, v in (await http.post()).items()}
        query = dict(http.query)
        request = Request(
            query=query,
            form=form,
            signed=verify({**form, **query}, self.secret),
            at=time.monotonic(),
            headers=dict(http.headers),
            url=http.raw_path,
        )
        self.requests.append(request)
        if not request.signed:
            reply = error(25, "Invalid signature")
        elif self.script:
            reply = self.script.popleft()
        else:
            reply = self.default(request)
        return await self._send(reply, http)

    async def _handle_file(self, http: web.Request) -> web.StreamResponse:
        reply = self.files.get(http.match_info["name"], Reply(status=404, body=b"gone"))
        return await self._send(reply, http)

    async def _send(self, reply: Reply, http: web.Request) -> web.StreamResponse:
        if reply.hang:
            await self.release.wait()
        response = web.Response(
            status=reply.status, body=reply.body, content_type=reply.content_type, headers=reply.headers
        )
        if "gzip" in http.headers.get("Accept-Encoding", ""):
            response.enable_compression()
        return response
