"""One scenario run: the stand-in, a fresh database, the daemon and an ERP consumer, each a real process
or connection; faults applied on schedule; a settle phase; the verdict against the stand-in's truth.

Processes: the stand-in (bench/scenarios/standin_proc.py) and the daemon (`python -m listener`,
configured through its environment) are children of this process; the ERP consumer runs here. The
daemon is supervised like a service manager would: if it exits when nobody asked it to, the exit is
recorded (`daemon_crashes`) and it is started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.daemon_proc import DaemonProcess, daemon_env
from bench.machine import machine
from bench.scenarios.feed_recorder import FeedRecorder
from bench.scenarios.presets import Action, Plan
from bench.scenarios.stalls import StallHistogram, free_port, scrape
from bench.scenarios.standin_client import StandInProcess
from bench.scenarios.verdict import (
    CHECKED_FIELDS,
    ReportTrade,
    TradeState,
    TruthChange,
    Withheld,
    burst_shape,
    compare_database,
    compare_fields,
    delivery,
    lag_figures,
    report_figures,
    withheld_needing_recovery,
)
from daemon.demo import standin_settings
from simulator.tmc_server import TmcServerConfig
from store.migrate import migrate
from store.schema import connection_settings
from taobao.fields import TRADE_FULLINFO_GET
from taobao.timefmt import parse_top_time

logger = logging.getLogger(__name__)

CHANNEL = "trade_changed"
LIST_METHODS = ("taobao.trades.sold.increment.get", "taobao.trades.sold.get")
FIRST_MESSAGE_ID = TmcServerConfig().first_message_id


def subscribed(tmc: dict[str, Any], connections_before: int, shops: int) -> bool:
    """The daemon connected to TMC and permitted every shop (the stand-in, as the platform, pushes only
    permitted sellers' messages): the market may move."""
    permits = tmc["permits"]
    permitted = not permits["required"] or len(permits["users"]) >= shops
    return bool(tmc["connections"] > connections_before and permitted)


@dataclass(frozen=True, slots=True)
class Options:
    seed: int = 7
    shops: int = 3
    history: int = 300
    api_rate: float = 200.0
    settle_timeout: float | None = None
    log_level: str = "WARNING"


class Scenario:
    def __init__(self, plan: Plan, options: Options, dsn: str, admin_dsn: str, workdir: Path) -> None:
        self.plan = plan
        self.options = options
        self.dsn = dsn
        self.admin_dsn = admin_dsn
        self.workdir = workdir
        self.database = dsn.partition("?")[0].rsplit("/", 1)[1]
        self.standin = StandInProcess(self._standin_args(), workdir / "standin.log")
        self.daemon: DaemonProcess | None = None
        self._incarnation = 0
        self._expected_exit = False
        self.counters = {"daemon_sigkills": 0, "daemon_crashes": 0, "pg_backends_killed": 0, "bursts": 0}
        self.crash_logs: list[str] = []
        self._supervisor: asyncio.Task[None] | None = None
        self._background: list[asyncio.Task[Any]] = []
        self._http_port = 0
        self.stalls = StallHistogram()  # the reconnect stalls every daemon process measured

    # ------------------------------------------------------------------------------------- processes

    def _standin_args(self) -> list[str]:
        o = self.options
        return [
            "--seed", str(o.seed), "--shops", str(o.shops), "--rate", "0", "--history", str(o.history),
            "--tmc-confirm-timeout", "30", "--tmc-failed-delay", "10",
            *self.plan.standin_args,
        ]  # fmt: skip

    def _daemon_values(self) -> dict[str, Any]:
        info = self.standin.info
        values: dict[str, Any] = {
            "database_url": self.dsn,
            **standin_settings(info),
            "sync_api_rate": self.options.api_rate,
            "http_port": self._http_port,
            "log_level": self.options.log_level,
            "log_format": "json",
        }
        values.update(self.plan.daemon_settings)
        return values

    async def _start_daemon(self) -> None:
        self._incarnation += 1
        self._http_port = free_port()  # known here, so its /metrics can be read before it stops
        daemon = DaemonProcess(
            daemon_env(self._daemon_values()), self.workdir / f"daemon-{self._incarnation}.log"
        )
        await daemon.start()
        self.daemon = daemon
        self._expected_exit = False

    async def _supervise(self) -> None:
        """Restart the daemon whenever it exits unasked (a service manager's Restart=always)."""
        while True:
            daemon = self.daemon
            assert daemon is not None
            assert daemon.process is not None
            code = await daemon.process.wait()
            if self._expected_exit:
                return
            self.counters["daemon_crashes"] += 1
            self.crash_logs.append(f"daemon {self._incarnation} exited with {code}:\n{daemon.log_tail(30)}")
            logger.warning("daemon exited with %s; restarting", code)
            await self._start_daemon()

    async def _wait_connected(self, connections_before: int, within: float = 60.0) -> float:
        started = time.monotonic()
        deadline = started + within
        while not subscribed(await self.standin.tmc(), connections_before, self.options.shops):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the daemon did not connect and permit its shops within {within:g} s")
            await asyncio.sleep(0.1)  # polling the stand-in's counters
        return time.monotonic() - started

    async def _stop_daemon(self) -> None:
        self._expected_exit = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self.daemon is not None:
            if self.daemon.process is not None and self.daemon.process.returncode is None:
                await scrape(self._http_port, self.stalls)
            await self.daemon.stop(grace=30)

    # ------------------------------------------------------------------------------------- faults

    async def _apply(self, action: Action) -> None:
        if action.kind == "tmc":
            await self.standin.post("/__standin/tmc", action.body)
        elif action.kind == "faults":
            await self.standin.post("/__standin/faults", action.body)
        elif action.kind == "burst":
            self.counters["bursts"] += 1
            self._background.append(asyncio.create_task(self.standin.post("/__bench/burst", action.body)))
        elif action.kind == "kill_daemon":
            await self._kill_and_restart()
        elif action.kind == "pg_kill":
            await self._kill_pg_connections()
        else:  # pragma: no cover - presets only use the kinds above
            raise ValueError(action.kind)
        logger.info("fault applied: %s %s", action.kind, action.body)

    async def _kill_and_restart(self) -> None:
        assert self._supervisor is not None
        assert self.daemon is not None
        self._expected_exit = True
        self._supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._supervisor
        process = self.daemon.process
        assert process is not None
        await scrape(self._http_port, self.stalls)
        process.send_signal(signal.SIGKILL)
        await process.wait()
        self.counters["daemon_sigkills"] += 1
        await self._start_daemon()
        self._supervisor = asyncio.create_task(self._supervise(), name="scenario-daemon-supervisor")

    async def _kill_pg_connections(self) -> None:
        """pg_terminate_backend every connection the daemon holds (application_name order-sync)."""
        admin = await asyncpg.connect(self.admin_dsn)
        try:
            deadline = time.monotonic() + 10
            while True:
                killed = await admin.fetchval(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = $1 AND application_name = 'order-sync'",
                    self.database,
                )
                if killed or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)  # the daemon may be between connections; look again
            self.counters["pg_backends_killed"] += int(killed or 0)
        finally:
            await admin.close()

    async def _run_schedule(self, opened: float) -> None:
        loop = asyncio.get_running_loop()
        for action in self.plan.actions:
            delay = opened + action.at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # the schedule's own clock: faults happen at set times
            await self._apply(action)

    # ------------------------------------------------------------------------------------- settle

    async def _database_state(self, conn: asyncpg.Connection, tids: list[int]) -> dict[int, TradeState]:
        rows = await conn.fetch(
            "SELECT tid, modified, status FROM trades WHERE tid = ANY($1::bigint[])", tids
        )
        return {int(r["tid"]): TradeState(r["modified"], r["status"]) for r in rows}

    async def _stored_fields(self, conn: asyncpg.Connection, tids: list[int]) -> dict[int, dict[str, Any]]:
        """CHECKED_FIELDS of the stored trades, read from the JSON the daemon stored (`raw`)."""
        rows = await conn.fetch("SELECT tid, raw FROM trades WHERE tid = ANY($1::bigint[])", tids)
        out: dict[int, dict[str, Any]] = {}
        for row in rows:
            raw = json.loads(row["raw"]) if isinstance(row["raw"], str) else row["raw"]
            out[int(row["tid"])] = {name: raw.get(name) for name in CHECKED_FIELDS}
        return out

    async def _settle(
        self, conn: asyncpg.Connection, truth: dict[int, TradeState], changed: list[int], within: float
    ) -> tuple[bool, float]:
        """Poll until the database and the consumer both show the truth and no trade is left unresolved,
        or `within` seconds pass."""
        started = time.monotonic()
        while True:
            stored = await self._database_state(conn, changed)
            verdict = compare_database(truth, changed, stored)
            last = int(await conn.fetchval("SELECT coalesce(max(position), 0) FROM trade_changes"))
            unresolved = await _unresolved_count(conn)
            if (
                not verdict["lost"]
                and not verdict["stale"]
                and not unresolved
                and self.recorder.cursor >= last
            ):
                return True, time.monotonic() - started
            if time.monotonic() - started > within:
                return False, time.monotonic() - started
            await asyncio.sleep(0.5)  # polling interval while the system catches up

    @property
    def api_rate(self) -> float:
        return float(self.plan.daemon_settings.get("sync_api_rate", self.options.api_rate))

    def settle_budget(self) -> float:
        if self.options.settle_timeout is not None:
            return self.options.settle_timeout
        sweep = float(self.plan.daemon_settings.get("sync_sweep_seconds", 30))
        return 60 + 3 * sweep + self.plan.list_lag + self.plan.outage_seconds

    # ------------------------------------------------------------------------------------- run

    async def run(self) -> dict[str, Any]:
        self._children_cpu0 = _children_cpu_seconds()
        await self.standin.start()
        try:
            await migrate(self.dsn)
            self.recorder = FeedRecorder(self.dsn, CHANNEL)
            self.recorder.start()
            await self._start_daemon()
            self._supervisor = asyncio.create_task(self._supervise(), name="scenario-daemon-supervisor")
            await self._wait_connected(0)
            conn = await asyncpg.connect(
                self.dsn, server_settings={**connection_settings(), "application_name": "scenario-runner"}
            )
            try:
                return await self._drive(conn)
            finally:
                await conn.close()
        finally:
            for task in self._background:
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            await self._stop_daemon()
            with contextlib.suppress(Exception):
                await self.recorder.stop()
            await self.standin.stop()

    async def _warm_up(self, conn: asyncpg.Connection, changes: int = 3, within: float = 120) -> float:
        """A few changes before the market opens, awaited at the database and the consumer: the daemon
        has finished its start-up (the reconciler reads the time it was down before the stream is
        consumed)."""
        started = time.monotonic()
        made = (await self.standin.market(action="step", n=changes))["changes"]
        want = {int(c["tid"]): parse_top_time(c["modified"]) for c in made}
        while True:
            stored = await self._database_state(conn, list(want))
            last = int(await conn.fetchval("SELECT coalesce(max(position), 0) FROM trade_changes"))
            done = all(tid in stored and stored[tid].modified >= m for tid, m in want.items())
            if done and self.recorder.cursor >= last:
                return time.monotonic() - started
            if time.monotonic() - started > within:
                raise TimeoutError(f"the warm-up changes did not reach the consumer within {within:g} s")
            await asyncio.sleep(0.1)  # polling the database and the consumer's cursor

    async def _drive(self, conn: asyncpg.Connection) -> dict[str, Any]:
        plan = self.plan
        loop = asyncio.get_running_loop()
        warm_up_s = await self._warm_up(conn)
        warm_up_seqs = (await self.standin.truth())["change_count"]
        load_before = machine()
        await self.standin.market(action="resume", rate=plan.rate)
        opened = loop.time()
        schedule = asyncio.create_task(self._run_schedule(opened), name="scenario-schedule")
        await asyncio.sleep(plan.duration)  # the run's length: the market trades meanwhile
        await self.standin.market(action="pause")
        if not schedule.done():
            schedule.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await schedule
        await asyncio.gather(*self._background)  # bursts still going finish their trades
        self._background.clear()
        # Faults off for the settle phase: what was lost must be recovered, not kept being lost.
        await self.standin.post("/__standin/faults", plan.settle_faults)
        if plan.settle_tmc:
            await self.standin.post("/__standin/tmc", plan.settle_tmc)

        truth_body = await self.standin.truth(changes=True, fields=CHECKED_FIELDS)
        truth = {
            int(tid): TradeState(parse_top_time(t["modified"]), t["status"])
            for tid, t in truth_body["trades"].items()
        }
        changes = [
            TruthChange(int(c["seq"]), int(c["tid"]), parse_top_time(c["modified"]), c["status"])
            for c in truth_body.get("changes", [])
        ]
        changed = sorted({c.tid for c in changes})
        settled, settle_s = await self._settle(conn, truth, changed, self.settle_budget())

        stored_all = {
            int(r["tid"]): TradeState(r["modified"], r["status"])
            for r in await conn.fetch("SELECT tid, modified, status FROM trades")
        }
        db = compare_database(truth, changed, stored_all)
        # Field checks only where the stored version is the truth's: older versions are `stale` already.
        current = sorted(set(changed) - set(db["lost"]) - set(db["stale"]))
        truth_fields = {int(tid): t.get("fields", {}) for tid, t in truth_body["trades"].items()}
        fields_differ = compare_fields(truth_fields, await self._stored_fields(conn, current), current)
        odd_texts = sum(
            1 for tid in changed if any("\x00" in str(v) for v in truth_fields.get(tid, {}).values())
        )
        published = await self.standin.published()
        result = delivery(changes, published, self.recorder.arrivals, truth, lag_after_seq=warm_up_seqs)
        self.evidence = (changes, published, list(self.recorder.arrivals))
        tmc = await self.standin.tmc()
        stats = await self.standin.stats()
        # `seq` names the market change a message announced; None: it announced none (a refund topic).
        withheld = [
            Withheld(int(w["id"]), w.get("tid"), str(w["reason"]), w.get("seq"), w.get("seq") is not None)
            for w in tmc["withheld"]
        ]
        needing, unmatched = withheld_needing_recovery(
            withheld, changes, FIRST_MESSAGE_ID, result.delivered_by
        )
        unresolved = await _unresolved_count(conn)
        reports = [dict(r) for r in await conn.fetch("SELECT * FROM gap_reports ORDER BY id")]
        report_trades = [
            ReportTrade(int(r["report_id"]), int(r["tid"]), bool(r["push_loss"]))
            for r in await conn.fetch("SELECT report_id, tid, push_loss FROM gap_report_trades")
        ]
        await self._stop_daemon()
        # Every daemon incarnation has exited and been reaped; the stand-in is still running.
        daemon_cpu = _children_cpu_seconds() - self._children_cpu0

        calls: dict[str, int] = stats["calls"]
        errors: dict[str, int] = stats["errors"]
        gateway_faults: dict[str, int] = stats.get("faults", {})
        fullinfo = int(calls.get(TRADE_FULLINFO_GET, 0))
        n = len(changes)
        figures: dict[str, Any] = {
            "scenario": plan.preset,
            "changes": n,
            "trades_changed": len(changed),
            "lost": len(db["lost"]),
            "stale": len(db["stale"]),
            "extra": len(db["extra"]),
            "fields_differ": len(fields_differ),
            "unresolved": unresolved,
            "unseen": len(result.unseen),
            "consumer_stale": len(result.consumer_stale),
            "settled": settled,
            "settle_s": round(settle_s, 1),
            "warm_up_s": round(warm_up_s, 1),
            **lag_figures(result),
            # The daemon's own measure, summed over its processes (bench/scenarios/stalls.py).
            "reconnect_stall": self.stalls.figures(),
            "fullinfo_calls": fullinfo,
            "list_calls": sum(int(calls.get(m, 0)) for m in LIST_METHODS),
            "fullinfo_per_change": round(fullinfo / n, 3) if n else None,
            "faults": {
                "tmc_drops": tmc["dropped"],
                "duplicated": tmc["duplicated"],
                "reordered": tmc["reordered"],
                "redelivered": tmc["redelivered"],
                "withheld": len(withheld),
                "withheld_unmatched": unmatched,
                "refused_upgrades": tmc["rejected_upgrades"],
                "outage_s": plan.outage_seconds,
                "code7_answers": sum(v for k, v in errors.items() if k.startswith("7:")),
                "isp_errors": sum(v for k, v in errors.items() if k.partition(":")[2].startswith("isp.")),
                "list_lag_s": plan.list_lag,
                "withheld_not_changes": sum(1 for w in withheld if not w.is_change),
                "tmc_closes": tmc["closed"],
                "tmc_oversized": tmc["oversized"],
                "tmc_unknown_headers": tmc["unknown_headers"],
                "trades_with_typed_nul": odd_texts,
                "detail_lag_answers": gateway_faults.get("detail_lag", 0),
                "odd_value_answers": gateway_faults.get("odd_values", 0),
                "error_window_answers": _count_prefixed(gateway_faults, "error_window:"),
                "malformed_pages": _count_prefixed(gateway_faults, "malformed_page:"),
                **self.counters,
            },
            **report_figures(reports, report_trades, needing, self.api_rate),
            "burst_share_2s": burst_shape(changes, published),
            "daemon_cpu_s": round(daemon_cpu, 2),
            "daemon_cpu_ms_per_change": round(daemon_cpu / n * 1000, 3) if n else None,
            "plan": {"duration_s": plan.duration, "rate": plan.rate, "shops": self.options.shops,
                     "seed": self.options.seed, "api_rate": self.api_rate, **plan.faults_summary()},
            "machine": load_before | {"load_1m_after": machine()["load_1m"]},
        }  # fmt: skip
        figures["ok"] = (
            settled
            and not (db["lost"] or db["stale"] or db["extra"] or result.unseen or result.consumer_stale)
            and not fields_differ
            and not unresolved
        )
        self.samples = {"lost": db["lost"][:20], "stale": db["stale"][:20], "unseen_seqs": result.unseen[:20],
                        "consumer_stale": result.consumer_stale[:20],
                        "fields_differ": fields_differ[:20]}  # fmt: skip
        return figures


async def _unresolved_count(conn: asyncpg.Connection) -> int:
    """Trades the daemon could not fetch or store and still owes
    (docs/design.md#unresolved-trades-block-proof)."""
    return int(await conn.fetchval("SELECT count(*) FROM unresolved_trades"))


def _count_prefixed(counts: dict[str, int], prefix: str) -> int:
    return sum(v for k, v in counts.items() if k.startswith(prefix))


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
