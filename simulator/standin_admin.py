"""The stand-in's admin and truth surface, on the gateway's aiohttp app under ADMIN_PREFIX: ground truth,
call stats, the gateway's and the TMC server's fault knobs, and commands to the market."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from simulator.change_publisher import ChangePublisher
from simulator.gateway import Gateway
from simulator.market import Market, MarketChange
from simulator.odd_values import ODD_BUYER_TEXT
from simulator.tmc_server import TmcServer
from simulator.top_protocol import escape_surrogates
from taobao.timefmt import format_top_time

ADMIN_PREFIX = "/__standin"
_KNOBS_PLEASE = "send a JSON object of knob names and values"


class AdminRoutes:
    def __init__(self, market: Market, gateway: Gateway, tmc: TmcServer, pushes: ChangePublisher) -> None:
        self._market = market
        self._gateway = gateway
        self._tmc = tmc
        self._pushes = pushes

    def add_to(self, app: web.Application) -> None:
        app.router.add_get(ADMIN_PREFIX + "/truth", self._get_truth)
        app.router.add_get(ADMIN_PREFIX + "/stats", self._get_stats)
        app.router.add_get(ADMIN_PREFIX + "/faults", self._get_faults)
        app.router.add_post(ADMIN_PREFIX + "/faults", self._post_faults)
        app.router.add_post(ADMIN_PREFIX + "/market", self._post_market)
        app.router.add_get(ADMIN_PREFIX + "/tmc", self._get_tmc)
        app.router.add_post(ADMIN_PREFIX + "/tmc", self._post_tmc)

    async def _get_truth(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            tids = [int(t) for t in query["tids"].split(",") if t] if query.get("tids") else None
        except ValueError:
            return _json({"error": "tids must be comma-separated integers"}, status=400)
        snapshot = await self._market.truth_async(
            shop=query.get("shop") or None, digests=query.get("digest", "1") not in ("0", "false"), tids=tids
        )
        body = snapshot.to_json()
        wanted = [f for f in query.get("fields", "").split(",") if f]
        if wanted:
            # The current values of these fields, for checks beyond status and modified.
            for tid in snapshot.trades:
                raw = self._market.trade(tid) or {}
                body["trades"][str(tid)]["fields"] = {f: raw[f] for f in wanted if f in raw}
        if query.get("changes", "0") not in ("0", "false"):
            body["changes"] = [_change_json(c, with_content=False) for c in self._market.changes]
        return _json(body)

    async def _get_stats(self, request: web.Request) -> web.Response:
        try:
            recent = int(request.query.get("recent", "50"))
        except ValueError:
            return _json({"error": "recent must be an integer"}, status=400)
        return _json(self._gateway.stats.summary(recent))

    async def _get_faults(self, _request: web.Request) -> web.Response:
        return _json(self._gateway.faults.to_json())

    async def _post_faults(self, request: web.Request) -> web.Response:
        try:
            patch = await _json_object(request, _KNOBS_PLEASE)
            self._gateway.faults.update(patch)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            return _json({"error": str(exc)}, status=400)
        if "rate_limit_per_second" in patch or "ban_seconds" in patch:
            self._gateway.injector.clear_bans()
        return _json(self._gateway.faults.to_json())

    async def _post_market(self, request: web.Request) -> web.Response:
        try:
            changes = self._market_command(await _json_object(request, "send a JSON object"))
        except (ValueError, TypeError, KeyError) as exc:
            return _json({"error": str(exc)}, status=400)
        market = self._market
        return _json(
            {
                "paused": market.paused,
                "running": market.running,
                "rate": market.rate,
                "change_count": market.change_count,
                "changes": [_change_json(c, with_content=True) for c in changes],
            }
        )

    def _market_command(self, command: dict[str, Any]) -> list[MarketChange]:
        """Set the rate and/or pause, resume, step or edit a buyer memo; returns the changes made."""
        market = self._market
        action = command.get("action")
        if "rate" in command:
            market.set_rate(float(command["rate"]))
        if action == "pause":
            market.pause()
        elif action == "resume":
            market.resume()
            if not market.running and market.rate > 0:
                market.start()
        elif action == "step":
            count = int(command.get("n", 1))
            if not 0 <= count <= 100_000:
                raise ValueError("n must be between 0 and 100000")
            return market.step(count)
        elif action == "buyer_memo":
            # The buyer types a memo (by default one holding a NUL and a lone surrogate).
            text = command.get("text", ODD_BUYER_TEXT)
            if not isinstance(text, str):
                raise ValueError("text must be a string")
            return [market.edit_buyer_memo(int(command["tid"]), text)]
        elif action is not None:
            raise ValueError("action must be pause, resume, step or buyer_memo")
        return []

    async def _get_tmc(self, _request: web.Request) -> web.Response:
        return _json(self._pushes.summary())

    async def _post_tmc(self, request: web.Request) -> web.Response:
        """Patch the TMC fault knobs; `{"drop_now": true}` aborts every live connection at once,
        `{"close_now": true}` closes them with close_code and close_reason, and `{"refuse_for": S}`
        refuses connects for S seconds (an outage)."""
        try:
            patch = await _json_object(request, _KNOBS_PLEASE)
            self._tmc.faults.update(patch)
        except (ValueError, TypeError) as exc:
            return _json({"error": str(exc)}, status=400)
        if patch.get("drop_now"):
            self._tmc.drop_connections()
        if patch.get("close_now"):
            await self._tmc.close_connections()
        return _json(self._pushes.summary())


async def _json_object(request: web.Request, hint: str) -> dict[str, Any]:
    """The request's JSON body, which must be an object (`hint` says what to send instead)."""
    body = await request.json()
    if not isinstance(body, dict):
        raise ValueError(hint)
    return body


def _change_json(change: MarketChange, with_content: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "seq": change.seq,
        "tid": change.tid,
        "seller_nick": change.seller_nick,
        "topic": change.topic,
        "modified": format_top_time(change.modified),
        "status": change.status,
    }
    if with_content:
        out["content"] = change.content
    return out


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        # Truth fields can hold lone surrogates a buyer typed: JSON text spells them as escapes.
        text=escape_surrogates(json.dumps(body, ensure_ascii=False)),
        status=status,
        content_type="application/json",
        charset="utf-8",
    )
