"""Finding the trades a refused batch is about (docs/design.md#bad-input-never-crashes).

When PostgreSQL refuses a batch for a reason about its data (`store.errors.TRADE_REFUSALS`), the batch is
split in halves and each half written on its own, recursively, until the writes that still fail hold
one trade each. Everything else commits, each part in its own transaction (a guarded upsert with its
own feed rows: docs/design.md#modified-never-goes-backwards and docs/design.md#commit-ordered-feed hold
for each commit). A batch with one bad trade costs about 2·log₂(size) transactions; a clean one, one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


async def bisect(
    items: Sequence[T],
    write: Callable[[Sequence[T]], Awaitable[R]],
    refused: Callable[[BaseException], bool],
) -> tuple[list[R], list[tuple[T, BaseException]]]:
    """`write` every item; the results of the writes that went through, and each item whose write was
    refused on its own with what refused it. An error `refused` does not accept propagates (a lost
    connection is not a trade's fault); parts written before it stay written."""
    results: list[R] = []
    failures: list[tuple[T, BaseException]] = []
    pending: list[Sequence[T]] = [items] if items else []
    while pending:
        part = pending.pop()
        try:
            results.append(await write(part))
        except Exception as exc:
            if not refused(exc):
                raise
            if len(part) == 1:
                failures.append((part[0], exc))
                continue
            middle = len(part) // 2
            # The first half is written first: popped last in, first out.
            pending += [part[middle:], part[:middle]]
    return results, failures
