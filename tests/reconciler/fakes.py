"""In-memory stand-ins for the reconciler's unit tests: the TOP calls it makes (`FakeTop`), a clock, and a
reconciler over the in-memory storage (`store.memory`). The end-to-end tests use the stand-in over
sockets and PostgreSQL; these keep the parts' own tests fast and exact."""

from __future__ import annotations

import dataclasses
import os
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any

from pydantic import SecretStr

from common.metrics import Registry
from reconciler.backfill import BackfillConfig
from reconciler.config import ReconcilerConfig
from reconciler.coordination import Coordination
from reconciler.load_plan import InitialLoadConfig
from reconciler.reconciler import Reconciler
from store.memory import MemoryDatabase, memory_reconciler_store
from taobao.errors import PermanentTopError, SessionExpired, TopError
from taobao.fields import ALL_TRADE_TYPES
from taobao.limiter import Priority
from taobao.models import TopatsTask, Trade, TradePage
from taobao.timefmt import format_top_time
from tests.reconciler.conftest import small_config

T0 = datetime(2026, 11, 11, 2, 0, tzinfo=UTC)  # a whole second, like every TOP time


def top_trade(
    tid: int,
    shop: str,
    modified: datetime,
    *,
    created: datetime | None = None,
    type: str = "fixed",
    note: str = "",
) -> Trade:
    """A trade as fullinfo returns it (times are whole seconds on TOP)."""
    return Trade.model_validate(
        {
            "tid": tid,
            "seller_nick": shop,
            "status": "WAIT_SELLER_SEND_GOODS",
            "type": type,
            "created": format_top_time(created or modified - timedelta(hours=1)),
            "modified": format_top_time(modified),
            "payment": "10.00",
            "seller_memo": note,
        }
    )


class FakeTop:
    """`reconciler.history.HistorySource` in memory: the shops' current trades, listed by `modified`
    (increment) or `created` (sold.get), inclusive at both ends as on TOP, and fetched by tid. Errors
    are injected per call kind; every call is logged as (method, params). TOPATS is retired here, as on
    today's platform."""

    def __init__(self, sessions: Mapping[str, str]) -> None:
        self._shops = {session: shop for shop, session in sessions.items()}
        self.trades: dict[int, Trade] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.list_errors: deque[TopError] = deque()  # raised by the next list calls, in turn
        self.fullinfo_errors: dict[int, TopError] = {}  # raised by every fullinfo of the tid
        self.session_errors: dict[str, TopError] = {}  # raised by every call with the session
        self.after_list: Callable[[], None] | None = None  # runs after each list call
        self.listed_as: dict[int, datetime] = {}  # list lag: the `modified` the lists still show
        self.day_errors: dict[datetime, TopError] = {}  # raised once by sold.get of the day starting there

    def put(self, trade: Trade) -> Trade:
        self.trades[trade.tid] = trade
        return trade

    def change(self, shop: str, tid: int, modified: datetime, **fields: Any) -> Trade:
        return self.put(top_trade(tid, shop, modified, **fields))

    def calls_of(self, method: str) -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name == method]

    def _shop(self, session: str) -> str:
        error = self.session_errors.get(session)
        if error is not None:
            raise error
        return self._shops[session]

    async def trades_sold_increment_get(
        self,
        session: str,
        *,
        start_modified: datetime,
        end_modified: datetime,
        page_no: int,
        page_size: int = 100,
        fields: str = "tid",
        types: Sequence[str] = ALL_TRADE_TYPES,
        use_has_next: bool = True,
        priority: Priority = Priority.BACKFILL,
    ) -> TradePage:
        params = {
            "start": start_modified,
            "end": end_modified,
            "page_no": page_no,
            "use_has_next": use_has_next,
        }
        self.calls.append(("increment", {**params, "priority": priority}))
        shop = self._shop(session)
        if self.list_errors:
            raise self.list_errors.popleft()
        shown = {tid: self.listed_as.get(tid, t.modified) for tid, t in self.trades.items()}
        matching = [
            t
            for t in self.trades.values()
            if t.seller_nick == shop
            and (modified := shown[t.tid]) is not None
            and start_modified <= modified <= end_modified
            and t.type in types
        ]
        matching.sort(key=lambda t: (shown[t.tid], t.tid), reverse=True)
        page = self._page(matching, page_no, page_size, use_has_next)
        if self.after_list is not None:
            self.after_list()
        return page

    async def trades_sold_get(
        self,
        session: str,
        *,
        start_created: datetime,
        end_created: datetime,
        page_no: int,
        page_size: int = 100,
        fields: str = "tid",
        types: Sequence[str] = ALL_TRADE_TYPES,
        use_has_next: bool = True,
        priority: Priority = Priority.BACKFILL,
    ) -> TradePage:
        self.calls.append(("sold_get", {"start": start_created, "end": end_created, "page_no": page_no}))
        shop = self._shop(session)
        error = self.day_errors.pop(start_created, None)
        if error is not None:
            raise error
        matching = [
            t
            for t in self.trades.values()
            if t.seller_nick == shop and t.created is not None and start_created <= t.created <= end_created
        ]
        matching.sort(key=lambda t: (t.created, t.tid))
        return self._page(matching, page_no, page_size, use_has_next)

    @staticmethod
    def _page(matching: list[Trade], page_no: int, page_size: int, use_has_next: bool) -> TradePage:
        rows = matching[(page_no - 1) * page_size : page_no * page_size]
        listed = [Trade(tid=t.tid) for t in rows]
        if use_has_next:
            return TradePage(trades=listed, has_next=page_no * page_size < len(matching))
        return TradePage(trades=listed, total_results=len(matching))

    async def trade_fullinfo(self, session: str, tid: int, *, priority: Priority = Priority.STREAM) -> Trade:
        self.calls.append(("fullinfo", {"tid": tid, "priority": priority}))
        self._shop(session)
        error = self.fullinfo_errors.get(tid)
        if error is not None:
            raise error
        trade = self.trades.get(tid)
        if trade is None:
            raise PermanentTopError("no such trade", sub_code="isv.trade-not-exist", tid=tid)
        return trade

    async def topats_trades_sold_get(
        self,
        session: str,
        *,
        start_date: date,
        end_date: date,
        fields: str,
        priority: Priority = Priority.BACKFILL,
    ) -> int:
        self.calls.append(("topats", {"start": start_date, "end": end_date}))
        raise PermanentTopError("API retired", code=22, sub_code="isv.api-retired")

    async def topats_result_get(
        self, task_id: int, *, session: str | None = None, priority: Priority = Priority.BACKFILL
    ) -> TopatsTask:
        raise PermanentTopError("API retired", code=22, sub_code="isv.api-retired")

    async def download_topats_result(
        self, url: str, dest: str | os.PathLike[str] | IO[bytes], *, check_code: str | None
    ) -> None:
        raise AssertionError("TOPATS is retired here: nothing to download")


class Clock:
    """The reconciler's `now`, moved by hand."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def unit_config(**changes: Any) -> ReconcilerConfig:
    """The end-to-end tests' timings (seconds instead of minutes) with nothing real to wait for: no
    lag probes, and the platform's 3-minute wait after a service rejection (only recorded here)."""
    base = small_config(
        replica="unit",
        backfill=BackfillConfig(concurrency=4, rejection_retry_seconds=180.0, lag_probes=0),
        initial_load=InitialLoadConfig(poll_seconds=0.01),
    )
    return dataclasses.replace(base, **changes)


@dataclasses.dataclass
class Unit:
    """A reconciler over the in-memory storage and a `FakeTop`, with what a test looks at."""

    reconciler: Reconciler
    top: FakeTop
    db: MemoryDatabase
    clock: Clock
    registry: Registry
    sleeps: list[float]

    @property
    def shops(self) -> list[str]:
        return list(self.reconciler.watch.shops)


def unit_reconciler(
    *,
    shops: Sequence[str] = ("shop-a",),
    config: ReconcilerConfig | None = None,
    db: MemoryDatabase | None = None,
    top: FakeTop | None = None,
    clock: Clock | None = None,
    coordination: Coordination | None = None,
    registry: Registry | None = None,
) -> Unit:
    sessions = {shop: f"session-of-{shop}" for shop in shops}
    config = config or unit_config()
    db = db or MemoryDatabase()
    top = top or FakeTop(sessions)
    clock = clock or Clock()
    registry = registry or Registry()
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    reconciler = Reconciler(
        config=config,
        client=top,
        storage=memory_reconciler_store(db, replica=config.replica),
        shops={shop: SecretStr(session) for shop, session in sessions.items()},
        registry=registry,
        now=clock,
        sleep=sleep,
        coordination=coordination,
    )
    return Unit(reconciler, top, db, clock, registry, sleeps)


def session_expired() -> SessionExpired:
    return SessionExpired("invalid session", code=27, sub_code="invalid-sessionkey")
