"""Parsing, coalescing, bounded intake, fairness and intake quarantine (no worker errors here)."""

from __future__ import annotations

import asyncio
import json

import pytest

from listener.trade_events import Rejection, TradeEvent, parse_trade_event
from taobao.tmc.events import TmcMessage
from tests.listener.fakes import message
from tests.listener.harness import pipeline

BIG_TID = 4_012_345_678_901_234_567  # 19 digits: beyond a float's precision


# ------------------------------------------------------------------------------------- parsing


def test_parse_reads_tid_and_nick() -> None:
    parsed = parse_trade_event(message(1, BIG_TID, shop="shop-a"))
    assert parsed == TradeEvent(tid=BIG_TID, shop="shop-a")


def test_parse_takes_seller_nick_from_content_when_the_message_has_none() -> None:
    msg = TmcMessage(id=1, topic="taobao_trade_TradeCreate", content='{"tid": "42", "seller_nick": " s "}')
    assert parse_trade_event(msg) == TradeEvent(tid=42, shop="s")


@pytest.mark.parametrize(
    "topic", ["taobao_refund_RefundCreated", "taobao_refund_RefundSuccess", "taobao_refund_RefundClosed"]
)
def test_a_refund_message_with_a_tid_asks_for_its_trade(topic: str) -> None:
    content = json.dumps(
        {"refund_id": 77, "tid": BIG_TID, "oid": 8, "seller_nick": "shop-a", "refund_fee": "9.90"}
    )
    assert parse_trade_event(TmcMessage(id=1, topic=topic, content=content)) == TradeEvent(BIG_TID, "shop-a")


def test_parse_tolerates_control_characters_in_strings() -> None:
    content = '{"tid": 7, "seller_memo": "line1\nline2\t"}'  # raw newline/tab inside a string
    assert parse_trade_event(TmcMessage(id=1, topic="taobao_trade_TradeMemoModified", content=content)) == (
        TradeEvent(tid=7, shop=None)
    )


@pytest.mark.parametrize(
    ("topic", "content", "kind"),
    [
        ("taobao_item_ItemUpdate", '{"tid": 1, "num_iid": 2}', "not_trade_topic"),
        ("taobao_refund_RefundableMarked", '{"modified": "2024-05-01 12:00:00"}', "names_no_trade"),
        ("taobao_refund_RefundCreated", '{"tid": "x", "refund_id": 3}', "bad_content"),
        ("taobao_trade_TradeCreate", "{not json", "bad_content"),
        ("taobao_trade_TradeCreate", "[1, 2]", "bad_content"),
        ("taobao_trade_TradeCreate", '{"oid": 5}', "bad_content"),
        ("taobao_trade_TradeCreate", '{"tid": 4.012345678901235e18}', "bad_content"),
        ("taobao_trade_TradeCreate", '{"tid": true}', "bad_content"),
        ("taobao_trade_TradeCreate", '{"tid": "abc"}', "bad_content"),
        ("taobao_trade_TradeCreate", '{"tid": -3}', "bad_content"),
        ("taobao_trade_TradeCreate", '{"tid": 9223372036854775808}', "bad_content"),
    ],
)
def test_parse_rejects_what_cannot_be_processed(topic: str, content: str, kind: str) -> None:
    parsed = parse_trade_event(TmcMessage(id=1, topic=topic, content=content, nick="s"))
    assert isinstance(parsed, Rejection)
    assert parsed.kind == kind


# ------------------------------------------------------------------------------------- coalescing


async def test_a_burst_for_one_queued_tid_costs_one_fetch() -> None:
    async with pipeline(start=False) as p:
        # TradeCreate + TradeAlipayCreate + TradeBuyerPay before any worker picks the tid up.
        for mid, topic in enumerate(("TradeCreate", "TradeAlipayCreate", "TradeBuyerPay"), start=1):
            await p.deliver(message(mid, 100, topic=f"taobao_trade_{topic}"))
        p.start()
        await p.settled()
        assert p.fetcher.calls_for(100) == 1
        assert len(p.store.batches) == 1
        assert sorted(p.journal.confirmed) == [1, 2, 3]
        assert p.metrics.coalesced.total() == 2
        commit = p.journal.index("commit", (100,))
        assert all(p.journal.index("confirm", mid) > commit for mid in (1, 2, 3))


async def test_a_refund_message_refetches_its_trade_and_is_confirmed_after_the_commit() -> None:
    async with pipeline() as p:
        await p.deliver(message(1, 100, topic="taobao_refund_RefundSuccess"))
        await p.settled()
        assert p.fetcher.calls_for(100) == 1
        assert p.journal.confirmed == [1]
        assert p.journal.index("confirm", 1) > p.journal.index("commit", (100,))
        assert p.metrics.dead_letters.total() == 0


async def test_events_during_a_fetch_cause_exactly_one_more_fetch() -> None:
    async with pipeline() as p:
        first = p.fetcher.hold_next(100)
        second = p.fetcher.hold_next(100)
        await p.deliver(message(1, 100))
        await p.fetcher.wait_calls(100, 1)
        await p.deliver(message(2, 100), message(3, 100))  # both arrive while fetch 1 is in flight
        first.set()
        await p.fetcher.wait_calls(100, 2)
        # Fetch 1 is committed and confirms message 1 only; 2 and 3 wait for fetch 2's commit.
        async with asyncio.timeout(5):
            while 1 not in p.journal.confirmed:
                await p.dispatcher.wait_activity()
        assert p.journal.confirmed == [1]
        second.set()
        await p.settled()
        assert p.fetcher.calls_for(100) == 2
        assert [[t.tid for t in b] for b in p.store.batches] == [[100], [100]]
        second_commit = [tick for tick, kind, _ in p.journal.events if kind == "commit"][1]
        assert p.journal.index("confirm", 2) > second_commit
        assert p.journal.index("confirm", 3) > second_commit


async def test_distinct_tids_are_fetched_separately_and_committed_in_one_batch() -> None:
    async with pipeline(start=False, batch_ms=1000, batch_size=3) as p:
        await p.deliver(message(1, 1), message(2, 2), message(3, 3))
        p.start()
        await p.settled()  # batch_size reached: flushed without waiting for batch_ms
        assert sorted(p.store.committed_tids) == [1, 2, 3]
        assert len(p.store.batches) == 1


async def test_a_redelivered_message_id_that_is_still_held_is_ignored() -> None:
    async with pipeline() as p:
        gate = p.fetcher.hold_next(5)
        await p.deliver(message(1, 5))
        await p.fetcher.wait_calls(5, 1)
        await p.deliver(message(1, 5))
        assert p.metrics.duplicates.total() == 1
        gate.set()
        await p.settled()
        assert p.journal.confirmed == [1]
        assert p.fetcher.calls_for(5) == 1


# ------------------------------------------------------------------------------------- bounded intake


async def test_submit_waits_when_max_events_are_held_and_resumes_as_work_completes() -> None:
    async with pipeline(max_events=3, workers=1) as p:
        gate = p.fetcher.hold_next(1)
        await p.deliver(message(1, 1), message(2, 1), message(3, 2))
        assert p.dispatcher.held_count == 3
        blocked = asyncio.create_task(p.deliver(message(4, 3)))
        for _ in range(20):  # let every ready task run; none can free capacity while the fetch is held
            await asyncio.sleep(0)
        assert not blocked.done()
        assert p.dispatcher.held_count == 3
        gate.set()
        async with asyncio.timeout(5):
            await blocked
        await p.settled()
        assert sorted(p.journal.confirmed) == [1, 2, 3, 4]


def big_message(message_id: int, tid: int, size: int) -> TmcMessage:
    body = {"seller_nick": "shop-a", "status": "WAIT_SELLER_SEND_GOODS", "tid": tid, "memo": "x" * size}
    return message(message_id, tid, content=json.dumps(body))


async def test_submit_waits_when_the_held_content_reaches_its_byte_budget() -> None:
    async with pipeline(max_events=100, max_held_bytes=250_000, workers=1) as p:
        gate = p.fetcher.hold_next(1)
        await p.deliver(big_message(1, 1, 100_000), big_message(2, 2, 100_000))
        blocked = asyncio.create_task(p.deliver(big_message(3, 3, 100_000)))
        for _ in range(20):  # let every ready task run; none can free memory while the fetch is held
            await asyncio.sleep(0)
        assert not blocked.done()
        assert p.dispatcher.held_count == 2  # far below max_events: the bytes are the bound
        gate.set()
        async with asyncio.timeout(5):
            await blocked
        await p.settled()
        assert sorted(p.journal.confirmed) == [1, 2, 3]


async def test_one_message_larger_than_the_byte_budget_is_still_taken() -> None:
    async with pipeline(max_held_bytes=1_000) as p:
        async with asyncio.timeout(5):
            await p.deliver(big_message(1, 1, 10_000))
            await p.settled()
        assert p.journal.confirmed == [1]


# ------------------------------------------------------------------------------------- fairness


async def test_shops_are_served_round_robin() -> None:
    async with pipeline(start=False, workers=1) as p:
        for n in range(5):
            await p.deliver(message(n + 1, 100 + n, shop="shop-a"))
        await p.deliver(message(10, 900, shop="shop-b"))
        p.start()
        await p.settled()
        order = [tid for _, tid, _ in p.fetcher.calls]
        assert order[:2] == [100, 900]
        sessions = {session for session, _, _ in p.fetcher.calls}
        assert sessions == {"session-of-shop-a", "session-of-shop-b"}


# ------------------------------------------------------------------------------------- intake quarantine


@pytest.mark.parametrize(
    ("msg", "reason_part"),
    [
        (message(1, 5, topic="taobao_item_ItemUpdate"), "not a trade topic"),
        (message(1, None, content='{"tid": '), "not JSON"),
        (message(1, None), "no usable tid"),
        (message(1, 5, shop="stranger"), "not an active shop"),
        (message(1, 5, shop=None), "names no seller"),
    ],
)
async def test_unprocessable_messages_are_dead_lettered_then_confirmed(
    msg: TmcMessage, reason_part: str
) -> None:
    async with pipeline() as p:
        await p.deliver(msg)
        assert p.fetcher.calls == []
        assert len(p.store.dead_letters) == 1
        letter = p.store.dead_letters[0]
        assert reason_part in str(letter["reason"])
        assert letter["id"] == 1
        assert p.journal.confirmed == [1]
        assert p.journal.index("dead_letter", 1) < p.journal.index("confirm", 1)
        assert p.dispatcher.held_count == 0


async def test_dead_letter_payload_keeps_the_whole_message() -> None:
    async with pipeline() as p:
        seen: list[str | bytes] = []
        original = p.store.dead_letter

        async def spy(**kwargs: object) -> None:
            seen.append(kwargs["payload"])  # type: ignore[arg-type]
            await original(**kwargs)  # type: ignore[arg-type]

        p.store.dead_letter = spy  # type: ignore[method-assign]
        await p.deliver(message(9, None, content="{broken"))
        body = json.loads(seen[0])
        assert body["content"] == "{broken"
        assert body["topic"] == "taobao_trade_TradeBuyerPay"


async def test_a_message_being_dead_lettered_is_not_yet_settled() -> None:
    async with pipeline() as p:
        p.store.dead_letter_gate = asyncio.Event()
        delivering = asyncio.create_task(p.deliver(message(1, 5, shop="stranger")))
        settled = asyncio.create_task(p.dispatcher.wait_settled())
        for _ in range(10):
            await asyncio.sleep(0)
        assert not settled.done()
        assert not p.dispatcher.is_settled
        p.store.dead_letter_gate.set()
        async with asyncio.timeout(5):
            await asyncio.gather(delivering, settled)
        assert p.journal.confirmed == [1]


async def test_a_failed_dead_letter_write_leaves_the_message_unconfirmed() -> None:
    async with pipeline() as p:

        async def broken(**kwargs: object) -> None:
            raise RuntimeError("database gone")

        p.store.dead_letter = broken  # type: ignore[method-assign]
        await p.deliver(message(1, 5, shop="stranger"))
        assert p.journal.confirmed == []
        assert p.channel.failed_ids == [1]


async def test_a_backlog_exists_only_while_tids_wait_for_a_worker() -> None:
    async with pipeline(start=False, workers=1) as p:
        assert not p.dispatcher.has_backlog()
        await p.deliver(message(1, 1), message(2, 2))
        assert p.dispatcher.has_backlog()
        p.start()
        await p.settled()
        assert not p.dispatcher.has_backlog()


async def test_a_batch_lingers_while_fetches_are_queued_and_goes_out_when_they_are_done() -> None:
    # One worker, three tids: while tids wait for the worker, the fetched trades wait for company;
    # the last fetch ends the backlog and the batch goes out at once, long before batch_ms.
    async with pipeline(start=False, workers=1, batch_size=10, batch_ms=60_000) as p:
        await p.deliver(message(1, 1), message(2, 2), message(3, 3))
        p.start()
        await p.settled()
        assert [sorted(t.tid for t in b) for b in p.store.batches] == [[1, 2, 3]]
