"""A backfill fetches only what changed since it was stored (docs/sync-rules.md#fields-tid-modified),
against the stand-in over real sockets and a real PostgreSQL: lists ask for `tid,modified`; a trade
stored at the listed `modified` is skipped and counted, one changed since is fetched, and one that owes
something (an unresolved row) is fetched whatever the list says; a state read within the second of its
`modified` (another change in that second could follow) is read again once, then skipped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from common.intervals import Interval
from reconciler.backfill import BackfillConfig, WindowReader
from reconciler.plan import Window, floor_second
from reconciler.unchanged import is_current
from simulator.compare import compare_with_market
from simulator.standin import StandIn, StandInConfig
from store.gap_reports import Outcome, PassCounts
from store.pg import PgStore
from store.pg_reconciler import PgTrades
from store.types import StoredVersion
from taobao.fields import TRADE_FULLINFO_GET, TRADES_SOLD_INCREMENT_GET
from taobao.limiter import Priority
from tests.reconciler.conftest import make_reconciler, small_config, top_client


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    stand_in = StandIn(StandInConfig(seed=67, shops=2, market_rate=0, history_trades=600, history_days=2))
    async with stand_in:
        yield stand_in


def fetched_tids(standin: StandIn, shop: str) -> list[int]:
    return [int(c.params["tid"]) for c in standin.stats.calls_of(TRADE_FULLINFO_GET, shop)]


def truth_tids(standin: StandIn, shop: str, window: Window) -> list[int]:
    market = standin.market
    lo, hi = window.start.timestamp(), window.end.timestamp()
    return [rec.tid for rec in market.records(market.shop_index(shop)) if lo <= rec.modified <= hi]


def settled_day() -> Window:
    """A proof window over the last day, ending a minute ago (no change made now falls in it)."""
    now = datetime.now(UTC)
    return Window(floor_second(now - timedelta(hours=23)), floor_second(now - timedelta(minutes=1)), True)


async def read_within_their_second(pg: PgStore, tids: list[int]) -> None:
    """As the stream stores a trade: read a moment after its change, within the second of `modified`,
    when another change in that second could still come."""
    await pg.pool.execute(
        "UPDATE trades SET fetched_at = modified + interval '500 milliseconds' WHERE tid = ANY($1::bigint[])",
        tids,
    )


async def read_once(standin: StandIn, pg: PgStore, window: Window) -> PassCounts:
    """One pass of a fresh reader (a reader remembers what it fetched) over `window` of shop 0."""
    counts = PassCounts()
    async with top_client(standin) as client:
        reader = WindowReader(client, PgTrades(pg), BackfillConfig(), now=lambda: datetime.now(UTC))
        result = await reader.read(
            standin.shops[0].nick,
            standin.shops[0].session,
            [window],
            priority=Priority.BACKFILL,
            source="backfill",
            counts=counts,
        )
    assert result.failure is None
    return counts


async def owe(pg: PgStore, shop: str, tid: int, window: Window) -> None:
    """An unresolved row for a stored trade, as a failed fetch leaves one."""
    await pg.pool.execute(
        """INSERT INTO unresolved_trades (shop, tid, source, kind, reason, first_failure, last_failure,
                                          next_attempt, belongs_from, belongs_until, stored)
           VALUES ($1, $2, 'stream', 'TradeNotFound', 'test', now(), now(), now(), $3, $4, true)""",
        shop,
        tid,
        window.start,
        window.end,
    )


async def test_a_second_read_fetches_only_changed_and_owed_trades(standin: StandIn, pg: PgStore) -> None:
    shop = standin.shops[0].nick
    now = datetime.now(UTC)
    # Up to a minute ahead, so trades changed now are listed in it too.
    window = Window(floor_second(now - timedelta(hours=23)), floor_second(now + timedelta(minutes=1)), True)
    first = await read_once(standin, pg, window)
    listed = truth_tids(standin, shop, window)
    assert len(listed) > 60
    assert first.fullinfo_calls == len(listed)
    assert first.fetches_skipped == 0
    for call in standin.stats.calls_of(TRADES_SOLD_INCREMENT_GET, shop):
        assert call.params["fields"] == "tid,modified"

    changed = listed[:3]
    for tid in changed:
        standin.market.edit_buyer_memo(tid, f"changed {tid}")
    owed = listed[10]
    await owe(pg, shop, owed, window)
    standin.stats.reset()

    second = await read_once(standin, pg, window)
    assert sorted(fetched_tids(standin, shop)) == sorted([*changed, owed])
    assert second.fullinfo_calls == len(changed) + 1
    assert second.fetches_skipped == len(listed) - len(changed) - 1
    assert second.changed == len(changed)
    comparison = await compare_with_market(pg.pool, standin.market, listed)
    assert comparison.ok, comparison.to_json()


async def test_a_state_read_within_its_second_is_read_again_then_skipped(
    standin: StandIn, pg: PgStore
) -> None:
    shop = standin.shops[0].nick
    window = settled_day()
    await read_once(standin, pg, window)
    listed = truth_tids(standin, shop, window)
    early = listed[:2]
    await read_within_their_second(pg, early)
    standin.stats.reset()
    again = await read_once(standin, pg, window)
    assert sorted(fetched_tids(standin, shop)) == sorted(early)
    assert again.unchanged == len(early)
    assert again.fetches_skipped == len(listed) - len(early)

    standin.stats.reset()
    third = await read_once(standin, pg, window)  # the read that found them as stored now counts
    assert fetched_tids(standin, shop) == []
    assert third.fetches_skipped == len(listed)


async def test_a_read_ahead_skips_a_state_read_within_its_second_and_the_proof_read_fetches_it(
    standin: StandIn, pg: PgStore
) -> None:
    shop = standin.shops[0].nick
    proof = settled_day()
    await read_once(standin, pg, proof)
    listed = truth_tids(standin, shop, proof)
    early = listed[:2]
    await read_within_their_second(pg, early)
    standin.stats.reset()
    ahead = await read_once(standin, pg, Window(proof.start, proof.end, proof=False))
    assert fetched_tids(standin, shop) == []  # stored at the listed `modified`: enough for a read ahead
    assert ahead.fetches_skipped == len(listed)

    standin.stats.reset()
    await read_once(standin, pg, proof)  # proof needs the read after the second
    assert sorted(fetched_tids(standin, shop)) == sorted(early)


@pytest.mark.parametrize(
    ("listed", "stored", "read", "skew", "current"),
    [
        (0, 1, None, 0, True),  # stored newer than listed
        (1, 0, 60, 0, False),  # listed newer
        (0, 0, None, 0, False),  # equal, read time unknown
        (0, 0, 0.5, 0, False),  # equal, read within the second
        (0, 0, 4, 0, True),  # equal, read after the second and the margin
        (0, 0, 4, -3, False),  # our clock 3 s ahead: the read was at 1 s on Taobao's clock
        (0, 0, 7, -3, True),
    ],
)
def test_a_stored_state_is_current_only_past_its_second(
    listed: int, stored: int, read: float | None, skew: int, current: bool
) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    version = StoredVersion(
        base + timedelta(seconds=stored), None if read is None else base + timedelta(seconds=read)
    )
    assert is_current(base + timedelta(seconds=listed), version, timedelta(seconds=skew)) is current


async def test_the_gap_report_counts_the_fetches_it_skipped(standin: StandIn, pg: PgStore) -> None:
    shop = standin.shops[0].nick
    now = datetime.now(UTC)
    since, until = floor_second(now - timedelta(days=3)), floor_second(now - timedelta(hours=1))
    async with top_client(standin) as client:
        reconciler = make_reconciler(standin, pg, client, small_config(max_span=timedelta(hours=20)))
        first = await reconciler.backfill(shop, Interval(since, until))
        standin.stats.reset()
        second = await reconciler.backfill(shop, Interval(since, until))

    assert first.fullinfo_calls == first.trades_found > 100
    assert first.fetches_skipped == 0
    assert second.outcome == Outcome.RECOVERED.value
    assert second.trades_found == first.trades_found
    assert second.fetches_skipped == second.trades_found
    assert second.fullinfo_calls == 0
    assert fetched_tids(standin, shop) == []
