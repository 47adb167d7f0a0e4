"""What the reconciler tests share: a migrated database per test (the ledger is per shop nick, and every
stand-in names its shops alike), a stand-in on real sockets, a fast TOP client, small timings."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from reconciler.backfill import BackfillConfig
from reconciler.config import ReconcilerConfig
from reconciler.load_plan import InitialLoadConfig
from reconciler.reconciler import Reconciler
from simulator.standin import StandIn
from store.migrate import migrate
from store.pg import PgStore
from store.pg_reconciler import pg_reconciler_store
from taobao.client import RetryPolicy, TopClient
from taobao.limiter import TopRateLimiter
from tests.conftest import create_database, drop_database
from tests.integration.harness import wait_for as wait_for
from tests.integration.harness import wait_for_async as wait_for_async

FAST_RETRY = RetryPolicy(max_tries=6, max_time=20.0, base_delay=0.01, max_delay=0.05, max_ban_wait=5.0)


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    """A migrated database of its own for each test."""
    database = await create_database()
    try:
        await migrate(database)
        yield database
    finally:
        await drop_database(database)


@pytest.fixture
async def pg(dsn: str) -> AsyncIterator[PgStore]:
    store = await PgStore.connect(dsn, max_size=8)
    try:
        yield store
    finally:
        await store.close()


def top_client(standin: StandIn, *, rate: float = 2000.0, cls: type[TopClient] = TopClient) -> TopClient:
    return cls(
        app_key=standin.app_key,
        app_secret=SecretStr(standin.app_secret),
        api_url=standin.api_url,
        limiter=TopRateLimiter(rate),
        retry=FAST_RETRY,
    )


def small_config(**changes: Any) -> ReconcilerConfig:
    """Timings scaled down for tests: seconds instead of minutes."""
    base = ReconcilerConfig(
        overlap=timedelta(seconds=2),
        safety_lag=timedelta(seconds=1),
        max_span=timedelta(hours=12),
        sweep_every=timedelta(hours=1),
        silence=timedelta(hours=1),
        stream_settle=timedelta(seconds=1.5),  # TOP times are whole seconds: more than 1 s
        tick_seconds=0.2,
        retry_cap_seconds=1.0,
        initial_load_days=0,
        replica="test-replica",
        backfill=BackfillConfig(concurrency=8, rejection_retry_seconds=0.0),
        initial_load=InitialLoadConfig(poll_seconds=0.05, batch=500),
    )
    return dataclasses.replace(base, **changes)


def make_reconciler(
    standin: StandIn, store: PgStore, client: TopClient, config: ReconcilerConfig | None = None, **kwargs: Any
) -> Reconciler:
    config = config or small_config()
    return Reconciler(
        config=config,
        client=client,
        storage=pg_reconciler_store(store, replica=config.replica),
        shops={s.nick: SecretStr(s.session) for s in standin.shops},
        **kwargs,
    )


