"""Supervision of the daemon's long-lived tasks, and stop signals (docs/design.md#graceful-stop,
docs/design.md#supervised-tasks).

Every task is named. Until the supervisor is told the daemon is stopping, a task that ends (returns
or raises) is a failure: it is logged with its name and reason and the daemon stops, so the process
exits non-zero and its manager restarts it, rather than running on without, say, its TMC channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskFailure:
    name: str
    error: BaseException | None  # None: the task returned (or was cancelled) while it should run on

    def describe(self) -> str:
        if self.error is None:
            return f"task {self.name!r} ended unexpectedly"
        return f"task {self.name!r} died: {type(self.error).__name__}: {self.error}"


class Supervisor:
    def __init__(self, on_failure: Callable[[TaskFailure], None]) -> None:
        self._on_failure = on_failure
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.stopping = False
        self.failure: TaskFailure | None = None  # the first one; it decides the exit reason

    def start(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        if name in self._tasks:
            coro.close()
            raise ValueError(f"a task named {name!r} is already supervised")
        task = asyncio.create_task(coro, name=name)
        self._tasks[name] = task
        task.add_done_callback(self._ended)
        return task

    def expect_end(self) -> None:
        """The daemon is stopping: tasks that end from now on are not failures (unless they raise)."""
        self.stopping = True

    def _ended(self, task: asyncio.Task[None]) -> None:
        error = None if task.cancelled() else task.exception()  # also marks the exception retrieved
        if self.stopping and error is None:
            return
        failure = TaskFailure(task.get_name(), error)
        log.error(
            "%s; stopping the service",
            failure.describe(),
            exc_info=error,
            extra={"action": "task_died"},
        )
        if self.failure is None:
            self.failure = failure
        self._on_failure(failure)

    async def cancel_all(self) -> None:
        self.stopping = True
        running = [task for task in self._tasks.values() if not task.done()]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


@contextlib.contextmanager
def stop_signals(
    on_signal: Callable[[signal.Signals], None],
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
) -> Iterator[None]:
    """Call `on_signal(sig)` on the running loop for each of `signals` while the block runs; the
    handlers in place before are restored afterwards (never installed in a constructor)."""
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in signals}
    installed: list[signal.Signals] = []
    try:
        for sig in signals:
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
            handler = previous[sig]
            if handler is not None:  # None: installed from C, cannot be put back from Python
                signal.signal(sig, handler)
