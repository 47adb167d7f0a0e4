"""A shop added to the registry while three replicas of the daemon (`python -m listener`, each its own
process) run on one database, against the stand-in that delivers TMC messages only for permitted
sellers, with the market trading all along.

What must hold: the added shop is permitted, its initial load runs once (no part of it asked of TOPATS
twice, one initial-load report), its pushes are fetched, and its trades end equal to the truth; the
other shops' publish → NOTIFY latency while it is added and loaded stays comparable to before."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr

from simulator.compare import compare_with_market
from simulator.market import MarketChange
from simulator.standin import StandIn, StandInConfig
from simulator.tmc_server import TmcServerConfig
from simulator.topats import TOPATS_SOLD_GET
from store.pg_shops import PgShops
from store.secret_box import SecretBox, generate_key
from taobao.fields import TRADE_FULLINFO_GET
from taobao.shop_calls import TMC_USER_PERMIT
from tests.integration.harness import DaemonProcess, daemon_env, wait_for, wait_for_async

REPLICAS = ("r1", "r2", "r3")
MARKET_RATE = 8.0  # changes per second, over every shop (the added one's are withheld until permitted)
SAMPLES = 40  # publish → NOTIFY latencies of the other shops in each window, at least


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    stand_in = StandIn(
        StandInConfig(
            seed=404,
            shops=4,
            market_rate=0,
            history_trades=400,
            history_days=1,
            require_permits=True,
            tmc=TmcServerConfig(confirm_timeout=5.0, failed_redelivery_delay=1.0, seed=404),
        )
    )
    async with stand_in:
        yield stand_in


@dataclass
class Latencies:
    """Publish → NOTIFY of every market change, by the shop that made it: the market's change listener
    stamps a trade when its change is published, the database's NOTIFY when its commit lands."""

    published: dict[int, tuple[float, str]] = field(default_factory=dict)
    seen: list[tuple[float, str, float]] = field(default_factory=list)  # published at, shop, latency

    def on_change(self, change: MarketChange) -> None:
        self.published.setdefault(change.tid, (time.monotonic(), change.seller_nick))

    def on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        tid = json.loads(str(payload)).get("tid")
        stamp = self.published.pop(int(tid), None) if tid is not None else None
        if stamp is not None:
            at, shop = stamp
            self.seen.append((at, shop, time.monotonic() - at))

    def of(self, shops: set[str], since: float, until: float = float("inf")) -> list[float]:
        return sorted(lag for at, shop, lag in self.seen if shop in shops and since <= at < until)


def log_entries(path: Path) -> list[dict[str, object]]:
    entries = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def p95(values: list[float]) -> float:
    return values[min(len(values) - 1, int(0.95 * len(values)))]


async def test_a_shop_added_while_three_replicas_run_is_permitted_loaded_once_and_streamed(
    standin: StandIn, fresh_database: str, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    *served, added = standin.shops
    others = {shop.nick for shop in served}
    key = generate_key()
    registry = PgShops(pool, SecretBox(SecretStr(key)))
    await registry.seed([(shop.nick, SecretStr(shop.session)) for shop in served])
    replicas = [
        DaemonProcess(
            daemon_env(
                standin,
                fresh_database,
                taobao_shops=[],
                sync_secret_key=key,
                sync_replica_id=name,
                sync_shops_refresh_seconds=2,
                sync_heartbeat_seconds=0.3,
                sync_stream_settle_seconds=1.5,
                sync_safety_lag_seconds=1,
                sync_overlap_seconds=2,
                sync_reconcile_seconds=0.5,
                sync_initial_load_days=1,
                sync_drain_seconds=5,
                log_level="INFO",
                log_format="json",
            ),
            tmp_path / f"{name}.log",
        )
        for name in REPLICAS
    ]
    latencies = Latencies()
    standin.add_change_listener(latencies.on_change)
    listener = await asyncpg.connect(fresh_database)
    await listener.add_listener("trade_changed", latencies.on_notify)
    market, tmc = standin.market, standin.tmc
    try:
        market.start(MARKET_RATE)
        for replica in replicas:
            await replica.start()
        await wait_for(lambda: standin.permits.users == others, 60, "the served shops permitted")
        await wait_for(lambda: len(tmc.connections()) == len(REPLICAS), 60, "every replica streaming")

        async def loaded(shops: set[str]) -> bool:
            rows = await pool.fetch("SELECT shop FROM initial_loads WHERE state = 'done'")
            return shops <= {row["shop"] for row in rows}

        await wait_for_async(lambda: loaded(others), 90, "the served shops' initial loads")

        # ---- the other shops' lag before the add ---------------------------------------------------
        before_from = time.monotonic()
        await wait_for(
            lambda: len(latencies.of(others, before_from)) >= SAMPLES, 60, "the lag before the add"
        )
        added_at = time.monotonic()
        before = latencies.of(others, before_from, added_at)

        # ---- the add, as `order-sync shops add` makes it ---------------------------------------------
        await registry.add(added.nick, SecretStr(added.session))
        await wait_for(lambda: added.nick in standin.permits.users, 30, "the added shop permitted")
        # From here TMC delivers its messages: none of them is withheld any more.
        withheld = len(tmc.withheld)
        await wait_for_async(lambda: loaded({added.nick}), 90, "the added shop's initial load")
        permitted_at = min(c.at for c in standin.stats.calls_of(TMC_USER_PERMIT, added.nick) if c.code == 0)

        def fetched_since_permit() -> bool:
            calls = standin.stats.calls_of(TRADE_FULLINFO_GET, added.nick)
            return any(c.code == 0 and c.at > permitted_at for c in calls)

        await wait_for(fetched_since_permit, 30, "a push of the added shop fetched")
        await wait_for(
            lambda: len(latencies.of(others, added_at)) >= SAMPLES, 60, "the lag while the shop was added"
        )
        during = latencies.of(others, added_at, time.monotonic())
        market.pause()

        # ---- the end state ---------------------------------------------------------------------------
        await wait_for(lambda: tmc.pending(standin.app_key) == 0, 60, "every message delivered")
        for shop in standin.shops:
            tids = list(standin.truth(shop=shop.nick, digests=False).trades)

            async def equal(tids: list[int] = tids) -> bool:
                return (await compare_with_market(pool, market, tids)).ok

            await wait_for_async(equal, 60, f"{shop.nick}'s trades to equal the truth")
        assert len(tmc.withheld) == withheld
        assert not [m for m in tmc.withheld if m.reason != "not_permitted"]

        # Loaded once: planned and done once over the three replicas, one initial-load report, and no
        # part of the history asked of TOPATS twice.
        actions = Counter(
            entry.get("action")
            for replica in replicas
            for entry in log_entries(replica.log_path)
            if entry.get("shop") == added.nick
        )
        assert (actions["initial_load_planned"], actions["initial_load_done"]) == (1, 1), actions
        reports = await pool.fetchval(
            "SELECT count(*) FROM gap_reports WHERE shop = $1 AND cause = 'initial_load'", added.nick
        )
        assert reports == 1
        asked = Counter(
            (c.params.get("start_time"), c.params.get("end_time"))
            for c in standin.stats.calls_of(TOPATS_SOLD_GET, added.nick)
            if c.code == 0
        )
        assert max(asked.values(), default=1) == 1, asked

        async def recorded() -> bool:
            record = await registry.get(added.nick)
            return record is not None and record.permitted_at is not None and record.permit_error is None

        await wait_for_async(recorded, 10, "the registry to record the permit")

        # The others did not wait on the add: their lag stayed within reach of what it was before.
        assert p95(during) <= 2 * p95(before) + 1.0, (p95(before), p95(during), len(before), len(during))
    except BaseException:
        for replica in replicas:
            print(f"---- {replica.log_path.name}:\n{replica.log_tail(40)}")
        raise
    finally:
        market.pause()
        await listener.close()
        for replica in replicas:
            await replica.stop()
