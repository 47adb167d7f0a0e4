"""What happens to messages when a fetch fails, by error class
(docs/design.md#one-error-taxonomy-three-scopes)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr

from taobao.errors import (
    MalformedResponse,
    PermanentTopError,
    RateLimited,
    RetryableTopError,
    ServiceRejection,
    SessionExpired,
    TradeNotFound,
)
from taobao.limiter import Priority
from taobao.tmc.events import TmcMessage
from tests.listener.fakes import Journal, StoreDown, message
from tests.listener.harness import pipeline


def test_the_journal_flags_a_confirm_without_a_covering_commit() -> None:
    # The fakes' check must be able to fail, or the tests below prove nothing.
    journal = Journal()
    journal.received(message(1, 100), 100)
    journal.confirm(1)
    assert journal.violations


@pytest.mark.parametrize(
    "error",
    [
        TradeNotFound("trade not found", sub_code="isv.trade-not-exist", tid=100),
        PermanentTopError("invalid arguments", code=41),
        MalformedResponse("no trade in the response"),
    ],
)
async def test_a_permanent_error_records_the_trade_failure_and_confirms(error: Exception) -> None:
    async with pipeline(start=False) as p:
        p.fetcher.errors[100] = [error]
        await p.deliver(message(1, 100), message(2, 100))
        p.start()  # both messages are covered by one fetch
        await p.settled()
        assert p.store.batches == []
        # One dead letter for the trade (shop, tid, reason), naming the messages it settles.
        [letter] = p.store.dead_letters
        assert (letter["tid"], letter["shop"], letter["source"]) == (100, "shop-a", "stream")
        assert letter["message_ids"] == [1, 2]
        assert letter["reason"] == f"fullinfo: {error}"
        assert sorted(p.journal.confirmed) == [1, 2]
        assert p.metrics.dead_letters.value(reason=type(error).__name__) == 1
        assert p.metrics.fetches.value(outcome="permanent_error") == 1


async def test_a_trade_failure_that_cannot_be_recorded_leaves_its_messages_for_redelivery() -> None:
    async with pipeline() as p:
        p.fetcher.errors[100] = [TradeNotFound("trade not found", sub_code="isv.trade-not-exist", tid=100)]

        async def broken(**kwargs: object) -> None:
            raise StoreDown("connection lost")

        p.store.dead_letter = broken  # type: ignore[method-assign]
        await p.deliver(message(1, 100))
        await p.settled()
        assert p.journal.confirmed == []
        assert p.channel.failed_ids == [1]
        assert p.metrics.left_unconfirmed.value(reason="dead_letter_failed") == 1
        assert p.metrics.dead_letters.value(reason="TradeNotFound") == 0


@pytest.mark.parametrize(
    "error",
    [
        RetryableTopError("HTTP 502"),
        RateLimited("banned", code=7, ban_seconds=30),
        ServiceRejection("slow query", sub_code="isv.trade-service-rejection"),
        RuntimeError("a defect in the client"),
    ],
)
async def test_an_error_that_may_pass_leaves_messages_for_redelivery(error: Exception) -> None:
    async with pipeline() as p:
        p.fetcher.errors[100] = [error]
        await p.deliver(message(1, 100))
        await p.settled()
        assert p.journal.confirmed == []
        assert p.channel.failed_ids == [1]
        assert p.store.dead_letters == []
        assert p.metrics.left_unconfirmed.value(reason="fetch_failed") == 1
        # The worker survived: the next message for the tid is fetched and committed.
        await p.deliver(message(2, 100))
        await p.settled()
        assert p.journal.confirmed == [2]


async def test_a_rejection_of_a_session_renewed_while_the_call_was_in_flight_does_not_pause() -> None:
    # The renewal reached the book (and resumed the shop) before this late answer came: pausing now
    # would leave the shop paused with nothing left to resume it.
    async with pipeline(start=False, workers=1) as p:
        gate = p.fetcher.hold_next(100)
        await p.deliver(message(1, 100, shop="shop-a"))
        p.start()
        await p.fetcher.wait_calls(100, 1)
        p.fetcher.session_errors["session-of-shop-a"] = SessionExpired("invalid session", code=27)
        p.sessions["shop-a"] = SecretStr("renewed-session")
        gate.set()
        await p.settled()
        assert p.dispatcher.paused_shops == {}
        assert [session for session, _, _ in p.fetcher.calls] == ["session-of-shop-a", "renewed-session"]
        assert p.journal.confirmed == [1]
        assert p.channel.failed_ids == []


async def test_session_expired_pauses_that_shop_and_other_shops_continue() -> None:
    async with pipeline(start=False, workers=1) as p:
        p.fetcher.session_errors["session-of-shop-a"] = SessionExpired("invalid session", code=27)
        await p.deliver(message(1, 100, shop="shop-a"), message(2, 101, shop="shop-a"))
        await p.deliver(message(3, 200, shop="shop-b"))
        p.start()
        await p.settled()
        assert p.dispatcher.paused_shops.keys() == {"shop-a"}
        # One call found the session dead; shop-a's other tid was never fetched.
        assert [tid for _, tid, _ in p.fetcher.calls] == [100, 200]
        assert sorted(p.channel.failed_ids) == [1, 2]
        assert p.journal.confirmed == [3]
        # Later messages for the paused shop are handed back at once, without a fetch.
        await p.deliver(message(4, 102, shop="shop-a"))
        assert p.channel.failed_ids[-1] == 4
        assert p.fetcher.calls_for(102) == 0
        assert p.dispatcher.held_count == 0
        await p.deliver(message(5, 201, shop="shop-b"))
        await p.settled()
        assert p.journal.confirmed == [3, 5]
        assert 'order_sync_shop_paused{shop="shop-a"} 1' in p.metrics.registry.render()


async def test_messages_arriving_during_the_fetch_that_finds_the_session_dead_are_handed_back() -> None:
    async with pipeline() as p:
        p.fetcher.session_errors["session-of-shop-a"] = SessionExpired("invalid session", code=27)
        gate = p.fetcher.hold_next(100)
        await p.deliver(message(1, 100))
        await p.fetcher.wait_calls(100, 1)
        await p.deliver(message(2, 100))
        gate.set()
        await p.settled()
        assert sorted(p.channel.failed_ids) == [1, 2]
        assert p.fetcher.calls_for(100) == 1
        assert p.journal.confirmed == []


async def test_store_failure_confirms_nothing_and_the_batch_is_retried() -> None:
    async with pipeline() as p:
        p.store.fail_next = 2
        await p.deliver(message(1, 100), message(2, 200))
        await p.settled()
        assert p.store.apply_calls >= 3
        assert p.metrics.batches.value(outcome="failed") == 2
        assert p.metrics.batches.value(outcome="committed") >= 1
        assert sorted(p.journal.confirmed) == [1, 2]
        assert p.channel.failed == []
        first_commit = next(tick for tick, kind, _ in p.journal.events if kind == "commit")
        assert all(p.journal.index("confirm", mid) > first_commit for mid in (1, 2))
        assert p.fetcher.calls_for(100) == 1  # the retry reuses the fetched trade
        assert not p.batcher.failing


async def test_no_confirm_while_the_commit_is_still_running() -> None:
    async with pipeline() as p:
        p.store.gate = asyncio.Event()
        await p.deliver(message(1, 100))
        async with asyncio.timeout(5):
            await p.store.apply_started.wait()
        for _ in range(20):
            await asyncio.sleep(0)
        assert p.journal.confirmed == []
        p.store.gate.set()
        await p.settled()
        assert p.journal.confirmed == [1]


async def test_messages_of_a_trade_the_store_did_not_report_applied_stay_unconfirmed() -> None:
    async with pipeline() as p:
        p.store.omit = {200}
        await p.deliver(message(1, 100), message(2, 200))
        await p.settled()
        assert p.journal.confirmed == [1]
        assert p.channel.failed_ids == [2]


async def test_messages_of_a_trade_the_store_refused_are_confirmed_once_it_is_recorded_unresolved() -> None:
    async with pipeline() as p:
        p.store.reject = {200}
        await p.deliver(message(1, 100), message(2, 200))
        await p.settled()
        assert sorted(p.journal.confirmed) == [1, 2]
        assert p.channel.failed == []
        assert p.metrics.dead_letters.value(reason="invalid_trade") == 1  # counted once
        [debt] = p.store.unresolved
        assert (debt.tid, debt.shop, debt.source, debt.stored) == (200, "shop", "stream", False)
        # Recorded before its messages were settled: the debt exists when the confirm goes out.
        assert p.journal.index("dead_letter_row", 200) < p.journal.index("confirm", 2)


async def test_fetches_use_stream_priority_and_the_shop_session() -> None:
    async with pipeline() as p:
        msg = TmcMessage(id=1, topic="taobao_trade_TradeCreate", content='{"tid": 7}', nick="shop-b")
        await p.deliver(msg)
        await p.settled()
        assert p.fetcher.calls == [("session-of-shop-b", 7, Priority.STREAM)]
