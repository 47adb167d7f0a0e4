"""`isv.trade-not-exist` soon after a push is the detail store lagging the message channel: the stream
keeps the message held and fetches again after a backoff, and only after the allowance records the
trade as unresolved and confirms (docs/design.md#unresolved-trades-block-proof)."""

from __future__ import annotations

from datetime import UTC, datetime

from common.backoff import BackoffPolicy
from listener.workers import TradeLag
from taobao.errors import TradeNotFound
from taobao.tmc.events import TmcMessage
from tests.integration.harness import wait_for
from tests.listener.fakes import message
from tests.listener.harness import FAST_BACKOFF, pipeline


def not_there(tid: int) -> TradeNotFound:
    return TradeNotFound("trade not found", sub_code="isv.trade-not-exist", tid=tid)


async def test_a_trade_not_there_yet_is_fetched_again_while_its_message_stays_held() -> None:
    async with pipeline(lag=TradeLag(allowance=60.0, retry=FAST_BACKOFF)) as p:
        p.fetcher.errors[100] = [not_there(100), not_there(100)]
        await p.deliver(message(1, 100))
        await p.fetcher.wait_calls(100, 2)
        # Between the tries the message is held: nothing confirmed, nothing handed back, no debt.
        assert p.dispatcher.held_ids() == [1]
        assert p.journal.confirmed == []
        assert p.channel.failed == []
        await p.settled()
        assert p.fetcher.calls_for(100) == 3
        assert p.store.committed_tids == [100]
        assert p.journal.confirmed == [1]
        assert p.store.unresolved == []
        assert p.store.dead_letters == []
        assert p.metrics.fetches.value(outcome="not_there_yet") == 2


async def test_a_message_that_arrives_while_the_tid_waits_joins_its_next_fetch() -> None:
    async with pipeline(lag=TradeLag(allowance=60.0, retry=FAST_BACKOFF)) as p:
        gate = p.fetcher.hold_next(100)
        p.fetcher.errors[100] = [not_there(100)]
        await p.deliver(message(1, 100))
        await p.fetcher.wait_calls(100, 1)
        await p.deliver(message(2, 100))  # while the first fetch is on its way
        gate.set()
        await p.settled()
        # The first fetch said not yet; one more fetch, started after both arrived, covers both.
        assert p.fetcher.calls_for(100) == 2
        assert sorted(p.journal.confirmed) == [1, 2]


async def test_after_the_allowance_the_trade_is_unresolved_at_its_messages_second_and_confirmed() -> None:
    sent = datetime(2026, 11, 11, 10, 0, 7, 250_000, tzinfo=UTC)
    async with pipeline(lag=TradeLag(allowance=0.05, retry=FAST_BACKOFF)) as p:
        p.fetcher.errors[100] = [not_there(100)] * 1000  # never there while the test runs
        msg = TmcMessage(
            id=1, topic="taobao_trade_TradeCreate", content='{"tid": 100}', time=sent, nick="shop-a"
        )
        await p.deliver(msg)
        await p.settled()
        assert p.fetcher.calls_for(100) >= 2  # tried again within the allowance
        [debt] = p.store.unresolved
        assert (debt.tid, debt.shop, debt.source, debt.kind) == (100, "shop-a", "stream", "TradeNotFound")
        # It belongs to its message's second: the stream's proof stays out of that second.
        assert (debt.belongs.start, debt.belongs.end) == (
            datetime(2026, 11, 11, 10, 0, 7, tzinfo=UTC),
            datetime(2026, 11, 11, 10, 0, 8, tzinfo=UTC),
        )
        assert p.journal.confirmed == [1]
        assert p.metrics.dead_letters.value(reason="TradeNotFound") == 1


async def test_a_paused_shop_hands_back_a_tid_that_waits_for_its_retry() -> None:
    slow = TradeLag(allowance=60.0, retry=BackoffPolicy(base=30.0, cap=30.0))
    async with pipeline(lag=slow) as p:
        p.fetcher.errors[100] = [not_there(100)]
        await p.deliver(message(1, 100))
        await p.fetcher.wait_calls(100, 1)
        await wait_for(lambda: p.metrics.fetches.value(outcome="not_there_yet") == 1, 5, "the retry")
        await p.dispatcher.pause_shop("shop-a", "session expired")
        assert p.channel.failed_ids == [1]
        assert p.dispatcher.is_settled
        assert p.dispatcher.queued_count == 0
