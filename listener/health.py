"""The daemon's HTTP port: `/healthz` (the process answers), `/readyz` (it is syncing), `/metrics`.

Bound to HTTP_HOST (127.0.0.1 by default): these pages show shop nicks and counts, nothing secret,
but they are for the operator's network, not the internet.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from aiohttp import web

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HealthSource(Protocol):
    def readiness(self) -> tuple[bool, dict[str, Any]]: ...

    def metrics_text(self) -> str: ...


def build_app(source: HealthSource) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        ready, details = source.readiness()
        return web.Response(
            text=json.dumps(details, ensure_ascii=False, default=str) + "\n",
            status=200 if ready else 503,
            content_type="application/json",
        )

    async def metrics(request: web.Request) -> web.Response:
        body = source.metrics_text().encode("utf-8")
        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


class HttpServer:
    def __init__(self, source: HealthSource, host: str, port: int) -> None:
        self._runner = web.AppRunner(build_app(source), access_log=None)
        self._host = host
        self._port = port
        self.port: int | None = None  # the bound port once started (HTTP_PORT=0 picks a free one)

    async def start(self) -> int:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else self._port
        return self.port

    async def stop(self) -> None:
        await self._runner.cleanup()
