"""The daemon's HTTP port: `/healthz` (the process answers), `/readyz` (it is syncing), `/metrics`, and
whatever routes the daemon adds (`/reports`, `/reports.json`: `daemon.report_http`).

Bound to HTTP_HOST (127.0.0.1 by default): these pages show shop nicks and counts, nothing secret,
but they are for the operator's network, not the internet. No access log: a scraper every few seconds
would drown the service's own lines.

`/readyz` answers 200 or 503 with a JSON body that names every check and why it failed:

    {"ready": false, "state": "running", "problems": ["postgres: unreachable (ConnectionRefusedError)"],
     "checks": {"postgres": {"ok": false, "detail": "unreachable (ConnectionRefusedError)"}, ...},
     "shops": {"shop-a": "active"}, "held_messages": 0}
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import asyncpg
from aiohttp import web

from common.health import Check
from taobao.pause import PauseState

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Ping = Callable[[], Awaitable[None]]
Routes = Callable[[web.Application], None]  # adds more pages to the application


class HealthSource(Protocol):
    async def readiness(self) -> tuple[bool, dict[str, Any]]: ...

    def metrics_text(self) -> str: ...


async def ping_pool(pool: asyncpg.Pool, limit_seconds: float | None = None) -> None:
    """`SELECT 1` on a pooled connection: the pool reconnects a connection the server closed, so
    this fails while the database is gone and succeeds again once it is back. `limit_seconds` bounds the
    wait for a connection, its release and the query each (None: the pool's own limits)."""
    async with pool.acquire(timeout=limit_seconds) as conn:
        await conn.fetchval("SELECT 1", timeout=limit_seconds)


# Pings given up on, kept until their clean-up ends (a task nobody references may be collected).
_abandoned: set[asyncio.Future[None]] = set()


def _abandon(task: asyncio.Future[None]) -> None:
    """Cancel `task` and let it finish on its own: a cancelled asyncpg query cancels on the server
    and returns its connection to the pool, which on a silent network lasts until the connection's
    own timeouts fire; the readiness answer must not wait for that."""
    task.cancel()
    _abandoned.add(task)
    task.add_done_callback(_forget)


def _forget(task: asyncio.Future[None]) -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: its failure was reported as the check's verdict already


async def check_postgres(ping: Ping, limit_seconds: float) -> Check:
    """Whether `ping` succeeds within `limit_seconds`; this returns by then whatever the ping does."""
    started = time.perf_counter()
    task = asyncio.ensure_future(ping())
    try:
        done, _ = await asyncio.wait({task}, timeout=limit_seconds)
    except asyncio.CancelledError:
        _abandon(task)
        raise
    if not done:
        _abandon(task)
        return Check(False, f"no answer within {limit_seconds:g} s")
    exc = task.exception()
    if exc is not None:  # any driver or socket error means: not reachable now
        # The type only: driver messages can quote the DSN's user and database.
        return Check(False, f"unreachable ({type(exc).__name__})")
    return Check(True, f"reachable ({(time.perf_counter() - started) * 1000:.1f} ms)")


def check_stream(*, connected: bool, connects: int, refusals: int, down_for: float, grace: float) -> Check:
    """Up, or down for at most `grace` seconds after having been up. A stream that never came up is
    not ready: a new replica with a wrong secret must not take over from a working one."""
    if connected:
        return Check(True, "connected")
    if connects == 0:
        refused = f", {refusals} CONNECT(s) refused" if refusals else ""
        return Check(False, f"not connected yet ({down_for:.0f} s since start{refused})")
    if down_for <= grace:
        return Check(True, f"reconnecting for {down_for:.1f} s (grace {grace:g} s)")
    return Check(False, f"disconnected for {down_for:.0f} s (grace {grace:g} s)")


def check_top(state: PauseState) -> tuple[Check, dict[str, Any]]:
    """Red while the app-wide pause holds every TOP call (docs/design.md#app-wide-pause), with the
    failure that tripped it; the details for /readyz's `top` key."""
    details: dict[str, Any] = {"paused": state.paused, "pauses": state.pauses}
    if not state.paused:
        return Check(True, "TOP calls pass"), details
    since = state.since.isoformat(timespec="seconds") if state.since else "?"
    details |= {"since": since, "reason": state.reason, "probes": state.probes}
    detail = (
        f"all TOP calls paused since {since} (app-wide: {state.reason}); "
        f"{state.probes} probe(s), next in {state.next_probe_in:.0f} s"
    )
    return Check(False, detail), details


def check_channel(channel: object, grace: float) -> Check | None:
    """The stream check for a push channel that reports its state (`TmcSession` does: `connected`,
    `down_since`, `counters`); a channel that only says `connected` gets the plain up/down check,
    one that says nothing gets none."""
    connected = getattr(channel, "connected", None)
    if not isinstance(connected, bool):
        return None
    down_since = getattr(channel, "down_since", None)
    counters = getattr(channel, "counters", None)
    if not isinstance(down_since, float) or counters is None:
        return Check(connected, "connected" if connected else "TMC channel is not connected")
    return check_stream(
        connected=connected,
        connects=int(getattr(counters, "connects", 0)),
        refusals=int(getattr(counters, "refusals", 0)),
        down_for=max(0.0, time.monotonic() - down_since),
        grace=grace,
    )


def build_app(source: HealthSource, routes: Routes | None = None) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        ready, details = await source.readiness()
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
    if routes is not None:
        routes(app)
    return app


class HttpServer:
    def __init__(self, source: HealthSource, host: str, port: int, routes: Routes | None = None) -> None:
        self._runner = web.AppRunner(build_app(source, routes), access_log=None)
        self._host = host
        self._port = port
        self.port: int | None = None  # the bound port once started (HTTP_PORT=0 picks a free one)

    async def start(self) -> int:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            raise
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else self._port
        return self.port

    async def stop(self) -> None:
        await self._runner.cleanup()
