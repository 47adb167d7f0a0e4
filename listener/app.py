"""The daemon assembled from its real parts: PostgreSQL store, TOP client, TMC session.

`build(settings)` is the one place that knows the concrete classes; everything below it sees only the
protocols of `listener.ports`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Mapping

from listener.health import ping_pool
from listener.metrics import ListenerMetrics
from listener.ports import MessageHandler
from listener.service import Service, SideTask
from listener.session import TmcSession
from listener.settings import Settings
from store.migrate import migrate
from store.pg import PgStore
from taobao.client import TopClient
from taobao.errors import OrderSyncError
from taobao.limiter import TopRateLimiter

log = logging.getLogger(__name__)


class MissingDatabase(OrderSyncError):
    """`run` needs DATABASE_URL; only `demo` provides a database of its own."""


def make_client(settings: Settings, limiter: TopRateLimiter | None = None) -> TopClient:
    return TopClient(
        app_key=settings.taobao_app_key,
        app_secret=settings.taobao_app_secret,
        api_url=settings.taobao_api_url,
        limiter=limiter or TopRateLimiter(settings.sync_api_rate),
        sign_method=settings.taobao_sign_method.value,
    )


def database_dsn(settings: Settings) -> str:
    if settings.database_url is None:
        raise MissingDatabase("DATABASE_URL is not set: point it at the ERP's PostgreSQL")
    return settings.database_url.get_secret_value()


def compose(
    settings: Settings,
    store: PgStore,
    client: TopClient,
    side_tasks: Mapping[str, SideTask] | None = None,
) -> Service:
    """The service over an open store and client, with the TMC session as its channel."""
    metrics = ListenerMetrics()
    metrics.watch_top_client(client.stats)

    async def quarantine(payload: bytes, reason: str) -> None:
        await store.dead_letter(source="tmc", reason=reason, payload=payload)
        metrics.dead_letters.inc(reason="malformed_frame")

    def channel_factory(handler: MessageHandler) -> TmcSession:
        session = TmcSession(
            url=settings.taobao_tmc_url,
            app_key=settings.taobao_app_key,
            app_secret=settings.taobao_app_secret,
            group_name=settings.taobao_tmc_group,
            handler=handler,
            quarantine=quarantine,
        )
        metrics.watch_tmc_session(session)
        return session

    return Service(
        settings,
        fetcher=client,
        store=store,
        channel_factory=channel_factory,
        side_tasks=side_tasks,
        metrics=metrics,
        db_ping=functools.partial(ping_pool, store.pool),
    )


@contextlib.asynccontextmanager
async def open_parts(settings: Settings) -> AsyncIterator[tuple[PgStore, TopClient]]:
    """Migrate, then open the store and the TOP client; both are closed on the way out."""
    dsn = database_dsn(settings)
    applied = await migrate(dsn)
    if applied:
        log.info("database migrated to version %s", applied[-1], extra={"action": "migrated"})
    store = await PgStore.connect(
        dsn, max_size=max(4, settings.worker_count() // 4), notify_channel=settings.notify_channel
    )
    try:
        async with make_client(settings) as client:
            yield store, client
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def build(settings: Settings) -> AsyncIterator[Service]:
    async with open_parts(settings) as (store, client):
        yield compose(settings, store, client)
