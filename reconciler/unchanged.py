"""Which listed trades a backfill need not fetch (docs/sync-rules.md#fields-tid-modified): those stored,
owing nothing, at a `modified` the list shows no newer version than.

A read ahead (a fresh window above the lag horizon: the reconnect gate) skips every trade stored at the
listed `modified` (`is_stored`): it proves nothing and is read again as proof, which applies the
stricter `is_current`. The gate then refetches no trade the stream stored just before the connection
dropped, and the stream resumes sooner.

`modified` has one-second resolution, so a trade can change twice within one second and keep its
`modified`: a stored state at the listed `modified` is known to be the latest only when it was read after
that second had ended on Taobao's clock. Our clock (which stamps the read) is corrected by the measured
skew, which is rounded and zero within a dead band (`taobao.clock`), hence the margin.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from store.types import StoredVersion

# One second of `modified` resolution, plus the skew estimate's dead band (2 s) and rounding.
READ_AFTER_MODIFIED: Final = timedelta(seconds=4)


def is_current(listed: datetime, stored: StoredVersion, skew: timedelta) -> bool:
    """Does `stored` hold every change the list's `modified` can stand for? `skew`: Taobao's clock minus
    ours where ours is ahead, else zero (`reconciler.config.Shared.skew`)."""
    if listed < stored.modified:
        return True
    if listed > stored.modified or stored.fetched_at is None:
        return False
    return stored.fetched_at + skew >= stored.modified + READ_AFTER_MODIFIED


def is_stored(listed: datetime, stored: StoredVersion) -> bool:
    """Enough for a read ahead: the stored state is at the listed `modified` or newer (whether another
    change in that second followed the read is for the proof read to find out)."""
    return listed <= stored.modified
