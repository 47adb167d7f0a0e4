"""A TOP answer that stalls: the gateway takes the request and answers nothing for a while, or answers a
byte at a time (a slow drip, as from a congested link or a middlebox). Either way the call must give up
on the attempt and retry (docs/design.md#one-error-taxonomy-three-scopes: network errors are retried),
and the retry's answer must be the stand-in's truth.

A small front between the client and the stand-in slows the first answer only, so the retry meets a
healthy gateway whatever the backoff's jitter. The client is built as `order-sync check` builds its
own, with a short `read_timeout`; the daemon's client keeps the 30 s default (`daemon.app.make_client`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr
from yarl import URL

from simulator.standin import StandIn
from taobao.client import RetryPolicy, TopClient
from taobao.limiter import TopRateLimiter
from taobao.models import Trade
from tests.faults.daemon import fault_standin

FULLINFO = "taobao.trade.fullinfo.get"
READ_TIMEOUT = 1.0
STALL_SECONDS = 5.0  # the stalled answer comes this late, long after the client should have given up
RETRIED_WITHIN = 6.0
FAST_RETRY = RetryPolicy(max_tries=4, max_time=30.0, base_delay=0.01, max_delay=0.05)


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    stand_in = fault_standin(seed=63)
    async with stand_in:
        yield stand_in


@dataclass
class SlowFront:
    """In front of the stand-in's TOP gateway: forwards each request; the first answer is held back
    `hold` seconds before anything is sent (a stall), or sent one byte every `drip` seconds; later
    answers pass whole and at once."""

    upstream: str
    hold: float = 0.0
    drip: float = 0.0
    answers: int = 0
    first_size: int = 0
    first_sent: int = 0  # bytes of the first answer sent so far

    async def handle(self, request: web.Request) -> web.StreamResponse:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                URL(f"{self.upstream}?{request.rel_url.raw_query_string}", encoded=True),
                data=await request.read(),
                headers={"Content-Type": request.headers.get("Content-Type", "")},
            ) as answer,
        ):
            body, status = await answer.read(), answer.status
        headers = {"Content-Type": answer.headers.get("Content-Type", "application/json")}
        self.answers += 1
        if self.answers > 1:
            return web.Response(body=body, status=status, headers=headers)
        self.first_size = len(body)
        await asyncio.sleep(self.hold)  # the stall being simulated
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = len(body)
        with contextlib.suppress(ConnectionError):  # the client gave up on this answer
            await response.prepare(request)
            for offset in range(0, len(body), 1 if self.drip else len(body)):
                await response.write(body[offset : offset + 1 if self.drip else None])
                self.first_sent = offset + 1 if self.drip else len(body)
                await asyncio.sleep(self.drip)  # the slow link being simulated
            await response.write_eof()
        return response


@contextlib.asynccontextmanager
async def serving(front: SlowFront) -> AsyncIterator[str]:
    """`front` listening on 127.0.0.1, port 0; its URL."""
    app = web.Application()
    app.router.add_post("/router/rest", front.handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/router/rest"
    finally:
        await runner.cleanup()


def client_for(standin: StandIn, api_url: str) -> TopClient:
    return TopClient(
        app_key=standin.app_key,
        app_secret=SecretStr(standin.app_secret),
        api_url=api_url,
        limiter=TopRateLimiter(100),
        connect_timeout=READ_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        retry=FAST_RETRY,
    )


async def fetch_through(front: SlowFront, standin: StandIn) -> tuple[Trade | None, TopClient]:
    """fullinfo of a trade the market just changed, through `front`; None if the call still ran after
    RETRIED_WITHIN seconds (it is then cancelled)."""
    [change] = standin.market.step(1)
    session = next(shop.session for shop in standin.shops if shop.nick == change.seller_nick)
    async with serving(front) as url, client_for(standin, url) as client:
        call = asyncio.create_task(client.trade_fullinfo(session, change.tid))
        done, _ = await asyncio.wait({call}, timeout=RETRIED_WITHIN)
        if not done:
            call.cancel()
        await asyncio.gather(call, return_exceptions=True)
    return (call.result() if done else None), client


def assert_truth(standin: StandIn, trade: Trade) -> None:
    truth = standin.market.record(trade.tid)
    assert truth is not None
    assert trade.modified is not None
    assert (int(trade.modified.timestamp()), trade.status) == (truth.modified, truth.status)


async def test_a_stalled_answer_times_out_and_is_retried(standin: StandIn) -> None:
    front = SlowFront(standin.api_url, hold=STALL_SECONDS)
    trade, client = await fetch_through(front, standin)
    assert trade is not None, f"the call still waited after {RETRIED_WITHIN:g} s"
    assert client.stats.calls[(FULLINFO, "retryable")] == 1
    assert client.stats.retries[FULLINFO] == 1
    assert front.first_sent == 0  # the retry's answer came while the first was still held back
    assert_truth(standin, trade)


async def test_a_dripping_answer_times_out_and_is_retried(standin: StandIn) -> None:
    front = SlowFront(standin.api_url, drip=READ_TIMEOUT / 5)
    trade, client = await fetch_through(front, standin)
    assert front.first_sent > 0, "no answer was dripped: nothing was tested"
    assert trade is not None, (
        f"the call still waited after {RETRIED_WITHIN:g} s,"
        f" {front.first_sent} of {front.first_size} bytes into a dripping answer"
    )
    assert client.stats.calls[(FULLINFO, "retryable")] == 1
    assert_truth(standin, trade)
