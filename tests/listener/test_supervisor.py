from __future__ import annotations

import asyncio
import os
import signal

import pytest

from common.tasks import wait_or_cancel
from daemon.supervisor import Supervisor, TaskFailure, stop_signals


async def test_a_task_that_dies_is_reported_once_with_its_name() -> None:
    failures: list[TaskFailure] = []
    supervisor = Supervisor(failures.append)
    never = asyncio.Event()

    async def steady() -> None:
        await never.wait()

    async def crashing() -> None:
        raise RuntimeError("lost the database")

    supervisor.start("steady", steady())
    task = supervisor.start("reconciler", crashing())
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)  # done callbacks run on the next loop iteration
    assert [f.describe() for f in failures] == ["task 'reconciler' died: RuntimeError: lost the database"]
    assert supervisor.failure is failures[0]
    await supervisor.cancel_all()
    assert len(failures) == 1  # cancelling the rest on the way out is not a failure


async def test_a_task_that_returns_while_it_should_run_is_a_failure_but_not_after_stopping() -> None:
    failures: list[TaskFailure] = []
    supervisor = Supervisor(failures.append)

    async def returns() -> None:
        return None

    await supervisor.start("channel", returns())
    await asyncio.sleep(0)
    assert [f.describe() for f in failures] == ["task 'channel' ended unexpectedly"]
    supervisor.expect_end()
    await supervisor.start("idle-watch", returns())
    await asyncio.sleep(0)
    assert len(failures) == 1


async def test_duplicate_names_are_refused() -> None:
    supervisor = Supervisor(lambda failure: None)
    gate = asyncio.Event()
    supervisor.start("x", gate.wait())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already supervised"):
        supervisor.start("x", gate.wait())  # type: ignore[arg-type]
    await supervisor.cancel_all()


async def test_wait_or_cancel_cancels_a_task_that_overruns() -> None:
    supervisor = Supervisor(lambda failure: None)
    supervisor.expect_end()
    task = supervisor.start("slow", asyncio.Event().wait())  # type: ignore[arg-type]
    assert await wait_or_cancel(task, 0.01) is False
    assert task.cancelled()


async def test_stop_signals_calls_back_and_restores_the_previous_handler() -> None:
    def previous(signum: int, frame: object) -> None:  # pragma: no cover - never called
        raise AssertionError("the old handler must not run while stop_signals is active")

    old = signal.signal(signal.SIGTERM, previous)
    received = asyncio.Event()
    seen: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        seen.append(sig)
        received.set()

    try:
        with stop_signals(on_signal):
            os.kill(os.getpid(), signal.SIGTERM)
            async with asyncio.timeout(5):
                await received.wait()
        assert seen == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, old)
