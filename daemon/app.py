"""The daemon assembled from its real parts: PostgreSQL store, TOP client, TMC session.

`build(settings)` is the one place that knows the concrete classes; everything below it sees only the
protocols of `listener.ports`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import tempfile
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from datetime import timedelta

from common.backoff import BackoffPolicy
from common.identity import default_replica
from daemon.health import check_top, ping_pool
from daemon.metrics import DaemonMetrics
from daemon.report_http import report_routes
from daemon.service import ExtraCheck, Service, SideTask
from daemon.session_keeper import SessionKeeper, SessionPolicy
from daemon.settings import Settings
from daemon.shop_keeper import ShopKeeper
from daemon.shop_sync import ReconcilerShops, ShopSync, ShopSyncConfig, StreamShops
from listener.ports import MessageHandler
from listener.session import SessionTiming, TmcSession
from reconciler.backfill import BackfillConfig
from reconciler.config import ReconcilerConfig
from reconciler.load_plan import InitialLoadConfig
from reconciler.reconciler import Reconciler
from replicas.replica_set import ReplicaConfig, ReplicaSet
from store.migrate import migrate
from store.pg import PgStore
from store.pg_reconciler import pg_reconciler_store
from store.pg_shops import PgShops
from store.secret_box import SecretBox
from store.shop_book import ShopBook
from store.shops import ShopRecord, ShopRegistry
from taobao.client import TopClient
from taobao.fields import ALL_TRADE_TYPES
from taobao.limiter import TopRateLimiter
from taobao.transport import PARTNER_ID

log = logging.getLogger(__name__)


def replica_id(settings: Settings) -> str:
    return settings.sync_replica_id or default_replica()


def make_reconciler_config(settings: Settings) -> ReconcilerConfig:
    concurrency = settings.sync_backfill_concurrency or settings.worker_count()
    types = tuple(settings.sync_trade_types) if settings.sync_trade_types else ALL_TRADE_TYPES
    return ReconcilerConfig(
        overlap=timedelta(seconds=settings.sync_overlap_seconds),
        safety_lag=timedelta(seconds=settings.sync_safety_lag_seconds),
        max_span=timedelta(seconds=settings.sync_backfill_window_seconds),
        sweep_every=timedelta(seconds=settings.sync_sweep_seconds),
        idle_after=timedelta(seconds=settings.sync_sweep_idle_after_seconds)
        if settings.sync_sweep_idle_after_seconds > 0
        else None,
        idle_sweep_every=timedelta(seconds=settings.sync_sweep_idle_seconds),
        api_rate=settings.sync_api_rate,
        reconcile_share=settings.sync_reconcile_share,
        silence=timedelta(seconds=settings.sync_silence_seconds),
        stream_settle=timedelta(seconds=settings.sync_stream_settle_seconds),
        tick_seconds=settings.sync_reconcile_seconds,
        stream_during_backfill=settings.sync_stream_during_backfill,
        initial_load_days=settings.sync_initial_load_days,
        replica=replica_id(settings),
        peer_wait_seconds=settings.sync_gate_peer_wait_seconds,
        initial_load=InitialLoadConfig(workdir=settings.sync_temp_dir),
        redrive=settings.redrive_policy(),
        backfill=BackfillConfig(
            types=types,
            concurrency=concurrency,
            rejection_retry_seconds=settings.sync_rejection_retry_seconds,
        ),
    )


def make_client(settings: Settings, limiter: TopRateLimiter | None = None) -> TopClient:
    # partner_id is TOP's free-form caller tag: naming the replica lets a call log attribute each call.
    tag = re.sub(r"[^A-Za-z0-9._:-]", "-", replica_id(settings))
    return TopClient(
        app_key=settings.taobao_app_key,
        app_secret=settings.taobao_app_secret,
        api_url=settings.taobao_api_url,
        limiter=limiter or TopRateLimiter(settings.sync_api_rate),
        sign_method=settings.taobao_sign_method.value,
        partner_id=f"{PARTNER_ID}/{tag}",
        call_timeout=settings.taobao_call_timeout_seconds,
        max_answer_bytes=settings.taobao_max_answer_bytes,
    )


@dataclass(frozen=True, slots=True)
class Daemon:
    """The service and, when reconciling, the reconciler hooked into its TMC session and the replica
    set it coordinates with."""

    service: Service
    reconciler: Reconciler | None
    replicas: ReplicaSet | None = None
    shops: ShopSync | None = None  # following the shop registry (with SYNC_SECRET_KEY)
    permits: ShopKeeper | None = None  # the TMC permits of the shops this replica leads


def assemble(
    settings: Settings,
    store: PgStore,
    client: TopClient,
    side_tasks: Mapping[str, SideTask] | None = None,
    *,
    reconcile: bool = True,
    session_timing: SessionTiming | None = None,
    session_backoff: BackoffPolicy | None = None,
    reconciler_config: ReconcilerConfig | None = None,
    registry: ShopRegistry | None = None,
    book: ShopBook | None = None,
    streaming: Collection[str] | None = None,
) -> Daemon:
    """The service over an open store and client, with the TMC session as its channel. With
    `reconcile`, the reconciler gates every (re)connect of the session (backfill before resume), hears
    its connects and disconnects, watches which messages are committed, and runs as a side task; so
    does the replica set, which shares the TOP quota and the shops' reconciliation with any other
    replica on the same database (see replicas/replica_set.py). With a `registry`, the shops served
    (`book`) follow it while the daemon runs (`daemon.shop_sync`); without, they are TAOBAO_SHOPS.
    Every served shop is permitted for TMC by its leader (`daemon.shop_keeper`); `streaming` names the
    shops whose messages TMC already delivers (a permit recorded earlier; None: all), the others are
    proven by the stream only once their permit succeeds."""
    book = book if book is not None else ShopBook(settings.shop_sessions())
    metrics = DaemonMetrics(shops=list(book))
    metrics.watch_top_client(client.stats)
    metrics.watch_app_pause(client.app_pause)
    metrics.watch_clock_skew(client.clock_skew)
    tasks = dict(side_tasks or {})
    reconciler: Reconciler | None = None
    replicas: ReplicaSet | None = None
    if reconcile:
        config = reconciler_config or make_reconciler_config(settings)
        replicas = make_replica_set(settings, client.limiter, config.replica, metrics, book)
        reconciler = Reconciler(
            config=config,
            client=client,
            storage=pg_reconciler_store(store, replica=config.replica),
            shops=book,
            registry=metrics.registry,
            coverage_metrics=metrics.coverage,
            coordination=replicas,
            top_paused_since=lambda: client.app_pause.state().since,
            clock_skew=client.clock_skew,
        )
        tasks |= {"reconciler": reconciler.run, "replicas": replicas.run}
        for nick in set(book) - set(book if streaming is None else streaming):
            reconciler.streamed(nick, None)  # proven by the stream once its permit succeeds
    # Several replicas: a shop's leader permits it, on taking the lead too (`daemon.shop_keeper`).
    keeper = ShopKeeper(
        client,
        registry,
        reconciler,
        leads=(lambda shop: True) if replicas is None else replicas.leads,
        sessions=book,
    )
    if replicas is not None:
        replicas.on_leadership(keeper.leadership_changed)
    keeper.register_metrics(metrics.registry)
    tasks["permits"] = keeper.run
    sync: ShopSync | None = None
    sessions: SessionKeeper | None = None
    if registry is not None:
        sync_config = ShopSyncConfig(settings.dsn(), refresh_seconds=settings.sync_shops_refresh_seconds)
        sessions = make_session_keeper(settings, client, registry, replicas)
        sessions.register_metrics(metrics.registry)
        sync = ShopSync(sync_config, registry, book, [keeper, sessions])
        tasks |= {"shops": sync.run, "sessions": sessions.run}
    else:
        keeper.permit_all({nick: ShopRecord(nick, book[nick]) for nick in book})
    channel_factory = functools.partial(
        open_tmc_session,
        settings=settings,
        store=store,
        metrics=metrics,
        reconciler=reconciler,
        timing=session_timing,
        backoff=session_backoff,
    )
    extra_checks: dict[str, ExtraCheck] = {
        "top": lambda: check_top(client.app_pause.state()),
        "permits": keeper.readiness,
    }
    if sessions is not None:
        extra_checks["sessions"] = sessions.readiness
    if replicas is not None:
        extra_checks["replica"] = replicas.readiness
    service = Service(
        settings,
        fetcher=client,
        store=store,
        channel_factory=channel_factory,
        side_tasks=tasks,
        metrics=metrics,
        db_ping=functools.partial(ping_pool, store.pool, settings.ready_db_timeout_seconds),
        extra_checks=extra_checks,
        watch=None if reconciler is None else reconciler.watch,
        http_routes=report_routes(store.pool, safety_lag_seconds=settings.sync_safety_lag_seconds),
        shops=book,
    )
    if sessions is not None:
        dispatcher = service.pipeline.dispatcher
        sessions.watch_rejected(lambda: dispatcher.paused_shops.keys())
    if sync is not None:
        sync.listen(StreamShops(service.pipeline.dispatcher))
        if reconciler is not None:
            sync.listen(ReconcilerShops(reconciler))
    return Daemon(service, reconciler, replicas, sync, keeper)


def open_tmc_session(
    handler: MessageHandler,
    *,
    settings: Settings,
    store: PgStore,
    metrics: DaemonMetrics,
    reconciler: Reconciler | None,
    timing: SessionTiming | None,
    backoff: BackoffPolicy | None,
) -> TmcSession:
    """The TMC session delivering to `handler`; a frame it cannot decode becomes a dead letter. With a
    reconciler, it waits for the reconciler's gate before each (re)connect and reports its state."""
    session = TmcSession(
        url=settings.taobao_tmc_url,
        app_key=settings.taobao_app_key,
        app_secret=settings.taobao_app_secret,
        group_name=settings.taobao_tmc_group,
        handler=handler,
        quarantine=functools.partial(quarantine_frame, store, metrics),
        timing=timing,
        backoff=backoff,
        gate=None if reconciler is None else reconciler.gate,
        on_state=None if reconciler is None else reconciler.on_state,
        on_reconnect=metrics.stream.reconnect_stall.observe,
    )
    metrics.watch_tmc_session(session)
    return session


async def quarantine_frame(store: PgStore, metrics: DaemonMetrics, payload: bytes, reason: str) -> None:
    await store.dead_letter(source="tmc", reason=reason, payload=payload)
    metrics.stream.dead_letters.inc(reason="malformed_frame")


def make_session_keeper(
    settings: Settings, client: TopClient, registry: ShopRegistry, replicas: ReplicaSet | None
) -> SessionKeeper:
    policy = SessionPolicy(
        renew_ahead=timedelta(seconds=settings.sync_session_renew_seconds),
        warn_ahead=timedelta(seconds=settings.sync_session_warn_seconds),
        check_seconds=min(5.0, settings.sync_shops_refresh_seconds),
    )
    # Several replicas: a shop's leader renews it (a refresh token works once).
    leads = (lambda shop: True) if replicas is None else replicas.leads
    return SessionKeeper(client, registry, policy, leads=leads)


def make_replica_set(
    settings: Settings, limiter: TopRateLimiter, replica: str, metrics: DaemonMetrics, shops: ShopBook
) -> ReplicaSet:
    config = ReplicaConfig(
        replica=replica,
        app_key=settings.taobao_app_key,
        api_rate=settings.sync_api_rate,
        heartbeat_seconds=settings.sync_heartbeat_seconds,
        schema=settings.database_schema,
        limits=settings.connection_limits(),
    )
    return ReplicaSet(
        config,
        dsn=settings.dsn(),
        shops=shops,
        limiter=limiter,
        registry=metrics.registry,
    )


def compose(
    settings: Settings,
    store: PgStore,
    client: TopClient,
    side_tasks: Mapping[str, SideTask] | None = None,
) -> Service:
    """The stream alone (no reconciler): what burst-mode runs and the stream tests drive."""
    return assemble(settings, store, client, side_tasks, reconcile=False).service


@contextlib.asynccontextmanager
async def open_parts(settings: Settings) -> AsyncIterator[tuple[PgStore, TopClient]]:
    """Migrate, then open the store and the TOP client; both are closed on the way out."""
    dsn = settings.dsn()
    applied = await migrate(dsn, schema=settings.database_schema)
    if applied:
        log.info("database migrated to version %s", applied[-1], extra={"action": "migrated"})
    store = await PgStore.connect(
        dsn,
        max_size=max(4, settings.worker_count() // 4),
        notify_channel=settings.notify_channel,
        schema=settings.database_schema,
        limits=settings.connection_limits(),
    )
    try:
        async with make_client(settings) as client:
            yield store, client
    finally:
        await store.close()


def warn_without_temp_dir(settings: Settings) -> None:
    """Say at start, not at a new shop's first download, that TOPATS results will be held in memory: a
    read-only root filesystem with no writable TMPDIR and no SYNC_TEMP_DIR."""
    if settings.sync_temp_dir is not None or settings.sync_initial_load_days == 0:
        return
    try:
        tempfile.gettempdir()
    except FileNotFoundError:
        log.warning(
            "no writable temporary directory (TMPDIR, /tmp, /var/tmp): initial loads will hold TOPATS "
            "results in memory; set SYNC_TEMP_DIR to a writable volume",
            extra={"action": "no_temp_dir"},
        )


@dataclass(frozen=True, slots=True)
class ShopSource:
    registry: ShopRegistry | None
    book: ShopBook
    streaming: frozenset[str] | None  # permitted before (None: unknown, taken as all)


async def open_registry(settings: Settings, store: PgStore) -> ShopSource:
    """With SYNC_SECRET_KEY: the shop registry, seeded with TAOBAO_SHOPS it does not know, the book of
    its active shops and those permitted before. Without: no registry, and the book of TAOBAO_SHOPS."""
    if settings.sync_secret_key is None:
        return ShopSource(None, ShopBook(settings.shop_sessions()), None)
    registry = PgShops(store.pool, SecretBox(settings.sync_secret_key))
    seeded = await registry.seed([(shop.nick, shop.session) for shop in settings.taobao_shops])
    if seeded:
        log.info("shops added from TAOBAO_SHOPS: %s", ", ".join(seeded), extra={"action": "shops_seeded"})
    records = await registry.records()
    book = ShopBook({r.nick: r.session for r in records if r.active})
    streaming = frozenset(r.nick for r in records if r.permitted_at is not None and r.permit_error is None)
    return ShopSource(registry, book, streaming)


@contextlib.asynccontextmanager
async def build(settings: Settings) -> AsyncIterator[Service]:
    warn_without_temp_dir(settings)
    async with open_parts(settings) as (store, client):
        source = await open_registry(settings, store)
        daemon = assemble(
            settings, store, client, registry=source.registry, book=source.book, streaming=source.streaming
        )
        yield daemon.service
