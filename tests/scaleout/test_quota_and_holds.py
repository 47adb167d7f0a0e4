"""The TOP quota across replicas (a share each, bans shared through PostgreSQL) and the stream's proof
across replicas (no replica proves a moment another still holds a message for)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from reconciler.stream_watch import StreamWatch
from taobao.limiter import Priority, TopRateLimiter
from taobao.tmc.events import TmcMessage
from tests.scaleout.conftest import RATE, SHOPS, eventually, replica_set, running


async def test_a_new_rate_never_lets_a_burst_through() -> None:
    limiter = TopRateLimiter(1000)
    await limiter.set_rate(20)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(5):
        await limiter.acquire(Priority.STREAM)
    # A fresh bucket of 20/s would have let 5 calls out at once; a full one spaces them 50 ms apart.
    assert loop.time() - started >= 0.2
    assert limiter.rate == 20


def test_pause_listeners_hear_local_bans_only() -> None:
    limiter = TopRateLimiter(10)
    heard: list[float] = []
    limiter.on_pause(heard.append)
    limiter.pause(3.0)
    limiter.pause(5.0, announce=False)  # learned from another replica: not passed on again
    assert heard == [3.0]
    assert limiter.pause_remaining() > 4.0


async def test_replicas_split_the_rate_and_one_ban_pauses_them_all(dsn: str) -> None:
    first, second, third = (replica_set(dsn, name) for name in ("a", "b", "c"))
    async with running(first, second):
        await eventually(
            lambda: first.quota.limiter.rate == second.quota.limiter.rate == RATE / 2, 10, "halves"
        )
        async with running(third):
            sets = (first, second, third)
            await eventually(lambda: all(s.quota.limiter.rate == RATE / 3 for s in sets), 10, "thirds")
            # Never more than the app's rate in total, whatever the moment (joins lower shares first).
            assert sum(s.quota.limiter.rate for s in sets) <= RATE + 1e-9
            # The TOP client pauses its limiter when answered code 7 with "ban will last 4 more seconds".
            first.quota.limiter.pause(4.0)
            await eventually(
                lambda: all(s.quota.limiter.pause_remaining() > 3.0 for s in (second, third)),
                1.0,
                "the others to hold their calls",
            )
            assert first.quota.announced == 1
            assert second.quota.followed >= 1
            assert third.quota.followed >= 1
        # `third` stopped (a graceful leave): the others take its share without waiting for a timeout.
        await eventually(lambda: first.quota.limiter.rate == RATE / 2, 2, "the share back")


async def test_no_replica_proves_the_stream_past_a_message_another_holds(dsn: str) -> None:
    now = datetime.now(UTC)

    def clock() -> datetime:
        return now

    holder, prover = replica_set(dsn, "holder"), replica_set(dsn, "prover")
    watches = {
        s.replica: StreamWatch(SHOPS, settle=timedelta(seconds=1), now=clock) for s in (holder, prover)
    }
    holder.attach(watches["holder"], lambda shop: False)
    prover.attach(watches["prover"], lambda shop: False)
    try:
        start = now - timedelta(minutes=5)
        for watch in watches.values():
            watch.connected_at(start)
        held_at = now - timedelta(minutes=2)
        watches["holder"].received(
            TmcMessage(id=7, topic="taobao_trade_TradeBuyerPay", content="{}", time=held_at, nick=SHOPS[0])
        )
        assert watches["holder"].hold() == held_at
        await holder.round()
        await prover.round()
        # The prover never saw the message, yet its proof stops where the holder's begins, every shop.
        assert {shop: i.end for shop, i in watches["prover"].provable(now).items()} == dict.fromkeys(
            SHOPS, held_at
        )
        watches["holder"].settled(7)  # committed
        await holder.round()
        await prover.round()
        assert watches["prover"].provable(now)[SHOPS[0]].end == now - timedelta(seconds=1)
        # A disconnect with a message still uncommitted: TMC redelivers it elsewhere, so it keeps
        # holding the others' proof for a while after the connection is gone.
        watches["holder"].received(
            TmcMessage(id=8, topic="taobao_trade_TradeBuyerPay", content="{}", time=held_at, nick=SHOPS[1])
        )
        watches["holder"].disconnected_at(now)
        await holder.round()
        await prover.round()
        assert watches["prover"].provable(now)[SHOPS[1]].end == held_at
    finally:
        await holder.link.close()
        await prover.link.close()
