"""Ending an asyncio task from outside: cancel it and wait until it has ended, or give it a while first."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def wait_or_cancel(task: asyncio.Task[Any], seconds: float) -> bool:
    """Wait up to `seconds` for `task` to end by itself; cancel it if it does not. True if it ended."""
    done, _ = await asyncio.wait({task}, timeout=max(0.0, seconds))
    if done:
        return True
    await cancel_and_wait(task)
    return False
