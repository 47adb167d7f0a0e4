"""The commit batcher on its own: flush triggers, merging per tid, retries, closing, cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import timedelta

from common.backoff import BackoffPolicy
from listener.batcher import CommitBatcher
from listener.metrics import ListenerMetrics
from taobao.models import Trade
from tests.listener.fakes import EPOCH, FakeStore, Journal


class RecordingSettler:
    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.confirmed: list[int] = []
        self.unconfirmed: list[tuple[int, str]] = []
        self.commits_seen_at_confirm: list[int] = []
        self.first_confirm = asyncio.Event()

    async def confirm(self, message_ids: Iterable[int]) -> None:
        ids = list(message_ids)
        self.confirmed += ids
        self.commits_seen_at_confirm += [len(self.store.batches)] * len(ids)
        self.first_confirm.set()

    async def leave_unconfirmed(self, message_ids: Iterable[int], kind: str, reason: str) -> None:
        self.unconfirmed += [(mid, kind) for mid in message_ids]


def trade(tid: int, second: int) -> Trade:
    return Trade.model_validate({"tid": tid, "modified": EPOCH + timedelta(seconds=second)})


def make(max_size: int = 10, max_delay: float = 0.0) -> tuple[CommitBatcher, FakeStore, RecordingSettler]:
    store = FakeStore(Journal())
    settler = RecordingSettler(store)
    batcher = CommitBatcher(
        store=store,
        settler=settler,
        max_size=max_size,
        max_delay=max_delay,
        metrics=ListenerMetrics(),
        retry=BackoffPolicy(base=0.001, cap=0.002),
    )
    return batcher, store, settler


async def finish(batcher: CommitBatcher, task: asyncio.Task[None]) -> None:
    batcher.close()
    async with asyncio.timeout(5):
        await task


async def test_two_fetches_of_a_tid_in_one_batch_become_one_row_with_both_messages() -> None:
    batcher, store, settler = make(max_size=10, max_delay=60.0)
    batcher.add(trade(1, 10), [1])
    batcher.add(trade(1, 20), [2])
    batcher.add(trade(1, 15), [3])  # visibly older than what the batch holds: not taken
    task = asyncio.create_task(batcher.run())
    await finish(batcher, task)  # close flushes at once instead of waiting 60 s
    assert len(store.batches) == 1
    [[row]] = store.batches
    assert row.modified == EPOCH + timedelta(seconds=20)
    assert settler.confirmed == [1, 2, 3]


async def test_a_full_batch_flushes_without_waiting_for_the_delay() -> None:
    batcher, store, settler = make(max_size=2, max_delay=60.0)
    task = asyncio.create_task(batcher.run())
    batcher.add(trade(1, 1), [1])
    batcher.add(trade(2, 1), [2])
    batcher.add(trade(3, 1), [3])
    async with asyncio.timeout(5):
        await settler.first_confirm.wait()
    assert [t.tid for t in store.batches[0]] == [1, 2]
    await finish(batcher, task)
    assert [[t.tid for t in b] for b in store.batches] == [[1, 2], [3]]
    assert settler.commits_seen_at_confirm == [1, 1, 2]


async def test_closing_with_a_failing_store_gives_the_messages_back() -> None:
    batcher, store, settler = make()
    store.fail_next = 100
    batcher.add(trade(1, 1), [1, 2])
    batcher.close()
    async with asyncio.timeout(5):
        await batcher.run()
    assert settler.confirmed == []
    assert settler.unconfirmed == [(1, "shutdown"), (2, "shutdown")]
    assert batcher.failing


async def test_a_write_in_progress_survives_cancellation_and_is_confirmed() -> None:
    batcher, store, settler = make()
    store.gate = asyncio.Event()
    task = asyncio.create_task(batcher.run())
    batcher.add(trade(1, 1), [7])
    async with asyncio.timeout(5):
        await store.apply_started.wait()
    task.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    assert not task.done()  # still waiting for its write
    store.gate.set()
    async with asyncio.timeout(5):
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert store.committed_tids == [1]
    assert settler.confirmed == [7]


async def yield_a_few_times() -> None:
    """Let every ready task run a step (the batcher decides whether to flush within a step or two)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_without_a_backlog_a_trade_is_written_at_once_despite_a_long_delay() -> None:
    batcher, store, settler = make(max_size=10, max_delay=60.0)
    task = asyncio.create_task(batcher.run())
    batcher.add(trade(1, 1), [1])
    async with asyncio.timeout(5):  # the old rule would have waited the whole 60 s for company
        await settler.first_confirm.wait()
    assert [[t.tid for t in b] for b in store.batches] == [[1]]
    await finish(batcher, task)


async def test_trades_that_arrive_during_a_commit_go_together_into_the_next_one() -> None:
    batcher, store, settler = make(max_size=10, max_delay=60.0)
    store.gate = asyncio.Event()
    task = asyncio.create_task(batcher.run())
    batcher.add(trade(1, 1), [1])
    async with asyncio.timeout(5):
        await store.apply_started.wait()
    batcher.add(trade(2, 1), [2])
    batcher.add(trade(3, 1), [3])
    store.gate.set()
    await finish(batcher, task)
    assert [[t.tid for t in b] for b in store.batches] == [[1], [2, 3]]
    assert settler.confirmed == [1, 2, 3]


async def test_with_a_backlog_a_batch_waits_for_company_until_it_is_full() -> None:
    batcher, store, settler = make(max_size=3, max_delay=60.0)
    batcher.set_backlog_probe(lambda: True)
    task = asyncio.create_task(batcher.run())
    batcher.add(trade(1, 1), [1])
    batcher.add(trade(2, 1), [2])
    await yield_a_few_times()
    assert store.apply_calls == 0
    batcher.add(trade(3, 1), [3])
    async with asyncio.timeout(5):
        await settler.first_confirm.wait()
    assert [[t.tid for t in b] for b in store.batches] == [[1, 2, 3]]
    await finish(batcher, task)


async def test_a_waiting_batch_goes_out_when_the_backlog_clears_or_the_delay_ends() -> None:
    backlog = True
    batcher, store, settler = make(max_size=10, max_delay=60.0)
    batcher.set_backlog_probe(lambda: backlog)
    task = asyncio.create_task(batcher.run())
    batcher.add(trade(1, 1), [1])
    await yield_a_few_times()
    assert store.apply_calls == 0
    backlog = False
    batcher.add(trade(2, 1), [2])  # the last fetch of the backlog
    async with asyncio.timeout(5):
        await settler.first_confirm.wait()
    assert [[t.tid for t in b] for b in store.batches] == [[1, 2]]
    await finish(batcher, task)

    short, store, settler = make(max_size=10, max_delay=0.02)
    short.set_backlog_probe(lambda: True)
    task = asyncio.create_task(short.run())
    short.add(trade(1, 1), [1])
    async with asyncio.timeout(5):  # a backlog that never clears delays a trade by max_delay only
        await settler.first_confirm.wait()
    await finish(short, task)


async def test_closing_cuts_short_a_batch_that_waits_for_company() -> None:
    batcher, store, settler = make(max_size=10, max_delay=60.0)
    batcher.set_backlog_probe(lambda: True)
    task = asyncio.create_task(batcher.run())
    batcher.add(trade(1, 1), [1])
    await yield_a_few_times()
    assert store.apply_calls == 0
    await finish(batcher, task)
    assert settler.confirmed == [1]
