"""Shared scaffolding for the TMC tests: a stand-in server and sessions on 127.0.0.1, and deadline waits."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr

from common.backoff import BackoffPolicy
from listener.session import SessionTiming, TmcSession
from simulator.tmc_faults import TmcFaults
from simulator.tmc_server import TmcServer, TmcServerConfig
from taobao.tmc.events import SessionEvent, TmcMessage

APP_KEY = "12345678"
APP_SECRET = "s3cr3t-for-tmc-tests"
FAST_TIMING = SessionTiming(pull_interval=0.05, ping_interval=5.0, ping_timeout=5.0, close_timeout=0.5)
FAST_BACKOFF = BackoffPolicy(base=0.05, cap=0.2, reset_after=5.0, refusal_floor=0.05)


async def wait_until(predicate: Callable[[], bool], within: float = 5.0, what: str = "condition") -> None:
    """Poll `predicate` until it holds; fail the test at the deadline."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.005)


async def holds_for(predicate: Callable[[], bool], duration: float, what: str = "condition") -> None:
    """Assert that `predicate` stays true for `duration` seconds (shows that something does NOT happen)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        assert predicate(), f"{what} stopped holding"
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def running_server(
    config: TmcServerConfig | None = None, faults: TmcFaults | None = None, **apps: str
) -> AsyncIterator[TmcServer]:
    server = TmcServer(apps or {APP_KEY: APP_SECRET}, config or TmcServerConfig(), faults)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class Recorder:
    """A handler that records every message and, unless told otherwise, confirms it."""

    def __init__(self, *, auto_confirm: bool = True) -> None:
        self.messages: list[TmcMessage] = []
        self.events: list[SessionEvent] = []
        self.auto_confirm = auto_confirm
        self.session: TmcSession | None = None

    async def __call__(self, message: TmcMessage) -> None:
        self.messages.append(message)
        if self.auto_confirm:
            assert self.session is not None
            await self.session.confirm(message.id)

    def on_state(self, event: SessionEvent) -> None:
        self.events.append(event)

    def ids(self) -> list[int]:
        return [m.id for m in self.messages]


class BlockedHandler(Recorder):
    """A handler stuck on the first message it gets until `release` is set (the intake full behind a
    slow database); once free it confirms each message. Records messages and events as `Recorder`."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def __call__(self, message: TmcMessage) -> None:
        self.messages.append(message)
        await self.release.wait()
        assert self.session is not None
        await self.session.confirm(message.id)


def make_session(
    server: TmcServer,
    handler: Callable[[TmcMessage], Awaitable[None]],
    *,
    secret: str = APP_SECRET,
    **kwargs: Any,
) -> TmcSession:
    kwargs.setdefault("timing", FAST_TIMING)
    kwargs.setdefault("backoff", FAST_BACKOFF)
    if isinstance(handler, Recorder):
        kwargs.setdefault("on_state", handler.on_state)
    session = TmcSession(
        url=server.url, app_key=APP_KEY, app_secret=SecretStr(secret), handler=handler, **kwargs
    )
    if isinstance(handler, Recorder):
        handler.session = session
    return session


@contextlib.asynccontextmanager
async def running(session: TmcSession) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(session.run(), name="tmc-session-under-test")
    try:
        yield task
    finally:
        session.stop()
        async with asyncio.timeout(5):
            await asyncio.gather(task, return_exceptions=True)


def publish(server: TmcServer, count: int, *, first_tid: int = 1000, size: int = 0) -> list[int]:
    """Publish `count` trade messages; returns their ids."""
    padding = "x" * size
    return [
        server.publish(
            APP_KEY,
            topic="taobao_trade_TradeBuyerPay",
            content=f'{{"tid": {first_tid + i}, "seller_nick": "shop", "pad": "{padding}"}}',
            nick="shop",
            user_id=2_200_000_000_123,
            time=datetime(2024, 5, 1, 4, 0, 0, 123000, tzinfo=UTC),
        )
        for i in range(count)
    ]
