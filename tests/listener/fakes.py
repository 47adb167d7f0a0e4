"""In-memory stand-ins for the listener's ports, built to check docs/design.md#confirm-after-commit by
construction.

A `Journal` keeps one logical clock for everything that happens: a message received, a fetch started,
a batch committed, a message confirmed. Each fetched trade carries its fetch's start tick in
`modified`, so the store knows which fetch produced what it commits. When a message is confirmed, the
journal checks that its tid was committed from a fetch that started *after* the message was received
(or that the message was dead-lettered first). Violations are collected (the dispatcher swallows
exceptions from `confirm`) and each test asserts there are none.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from common.errors import OrderSyncError
from listener.ports import MessageHandler
from store.types import ApplyResult
from store.unresolved import TradeDebt
from store.validation import rejection
from taobao.limiter import Priority
from taobao.models import Trade
from taobao.tmc.events import TmcMessage

EPOCH = datetime(2024, 11, 11, tzinfo=UTC)


def message(
    message_id: int,
    tid: int | str | None,
    *,
    shop: str | None = "shop-a",
    topic: str = "taobao_trade_TradeBuyerPay",
    content: str | None = None,
) -> TmcMessage:
    if content is None:
        body: dict[str, object] = {"seller_nick": shop, "status": "WAIT_SELLER_SEND_GOODS", "type": "fixed"}
        if tid is not None:
            body["tid"] = tid
        content = json.dumps(body)
    return TmcMessage(id=message_id, topic=topic, content=content, nick=shop)


class StoreDown(OrderSyncError):
    """What a lost database connection looks like to the batcher."""


@dataclass
class Journal:
    clock: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    events: list[tuple[int, str, object]] = field(default_factory=list)
    received_at: dict[int, tuple[int, int | None]] = field(default_factory=dict)  # id → (tick, tid)
    commits: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # tid → [(commit, fetch tick)]
    dead_lettered: set[int] = field(default_factory=set)
    confirmed: list[int] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def tick(self, kind: str, what: object) -> int:
        now = next(self.clock)
        self.events.append((now, kind, what))
        return now

    def received(self, msg: TmcMessage, tid: int | None) -> None:
        # A redelivery announces the same change as the first delivery: the first one counts.
        self.received_at.setdefault(msg.id, (self.tick("received", msg.id), tid))

    def committed(self, trades: Sequence[Trade]) -> int:
        now = self.tick("commit", tuple(t.tid for t in trades))
        for trade in trades:
            assert trade.modified is not None
            fetch_tick = int((trade.modified - EPOCH).total_seconds())
            self.commits.setdefault(trade.tid, []).append((now, fetch_tick))
        return now

    def confirm(self, message_id: int) -> None:
        now = self.tick("confirm", message_id)
        if message_id in self.confirmed:
            self.violations.append(f"message {message_id} confirmed twice")
        self.confirmed.append(message_id)
        if message_id in self.dead_lettered:
            return
        if message_id not in self.received_at:
            self.violations.append(f"message {message_id} confirmed but never delivered")
            return
        received, tid = self.received_at[message_id]
        covering = [c for c, fetch in self.commits.get(tid or -1, []) if fetch > received and c < now]
        if not covering:
            self.violations.append(
                f"message {message_id} (tid {tid}) confirmed at {now} without a commit of a fetch "
                f"started after it was received at {received}"
            )

    def index(self, kind: str, what: object) -> int:
        """The tick at which `kind`/`what` happened first."""
        return next(tick for tick, k, w in self.events if k == kind and w == what)


class FakeFetcher:
    """fullinfo with controllable latency (per-call gates) and errors (per tid or per session)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.calls: list[tuple[str, int, Priority]] = []
        self.errors: dict[int, list[BaseException]] = {}  # raised by the next calls for a tid
        self.session_errors: dict[str, BaseException] = {}  # raised by every call with this session
        self._gates: dict[int, list[asyncio.Event]] = {}
        self._changed = asyncio.Event()

    def hold_next(self, tid: int) -> asyncio.Event:
        """The next fetch of `tid` waits until the returned event is set."""
        gate = asyncio.Event()
        self._gates.setdefault(tid, []).append(gate)
        return gate

    def calls_for(self, tid: int) -> int:
        return sum(1 for _, t, _ in self.calls if t == tid)

    async def wait_calls(self, tid: int, count: int) -> None:
        async with asyncio.timeout(5):
            while self.calls_for(tid) < count:
                self._changed.clear()
                await self._changed.wait()

    async def trade_fullinfo(self, session: str, tid: int, *, priority: Priority = Priority.STREAM) -> Trade:
        started = self.journal.tick("fetch", tid)
        self.calls.append((session, tid, priority))
        self._changed.set()
        gates = self._gates.get(tid)
        if gates:
            await gates.pop(0).wait()
        if session in self.session_errors:
            raise self.session_errors[session]
        pending = self.errors.get(tid)
        if pending:
            raise pending.pop(0)
        return Trade.model_validate(
            {
                "tid": tid,
                "seller_nick": "shop",
                "status": "WAIT_SELLER_SEND_GOODS",
                # The fetch's start tick, so the journal can tell which fetch a commit came from.
                "modified": EPOCH + timedelta(seconds=started),
            }
        )


class FakeStore:
    """Records committed batches and dead letters; can fail (StoreDown) or hold (a gate) the next applies."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.batches: list[list[Trade]] = []
        self.dead_letters: list[dict[str, object]] = []
        self.fail_next = 0
        self.apply_calls = 0
        self.gate: asyncio.Event | None = None
        self.apply_started = asyncio.Event()
        self.omit: set[int] = set()  # tids to leave out of the ApplyResult
        self.reject: set[int] = set()  # tids to report as refused (not stored)
        self.unresolved: list[TradeDebt] = []  # every record_unresolved, in order
        self.dead_letter_gate: asyncio.Event | None = None

    async def apply_trades(self, trades: Sequence[Trade], *, source: str) -> ApplyResult:
        assert source == "stream"
        self.apply_calls += 1
        self.apply_started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_next:
            self.fail_next -= 1
            raise StoreDown("connection lost")
        self.journal.committed(trades)
        self.batches.append(list(trades))
        tids = [t.tid for t in trades if t.tid not in self.omit]
        refused = [rejection(t, "refused by the fake store") for t in trades if t.tid in self.reject]
        return ApplyResult(
            changed=tuple(t for t in tids if t not in self.reject),
            unchanged=(),
            refused=tuple(r for r in refused if r.tid in tids),
        )

    async def record_unresolved(
        self, debt: TradeDebt, *, at: datetime, delay: Callable[[int], float], history: bool
    ) -> int:
        self.journal.tick("dead_letter_row", debt.tid)
        if history:
            payload = debt.payload or b"{}"
            await self.dead_letter(
                source=debt.source, reason=debt.reason, payload=payload, tid=debt.tid, shop=debt.shop
            )
        self.unresolved.append(debt)
        return sum(1 for d in self.unresolved if d.tid == debt.tid)

    async def dead_letter(
        self,
        *,
        source: str,
        reason: str,
        payload: bytes | str,
        tid: int | None = None,
        shop: str | None = None,
    ) -> None:
        if self.dead_letter_gate is not None:
            await self.dead_letter_gate.wait()
        body = json.loads(payload)
        if "message_ids" in body:
            # A trade failure (listener.workers): one row for the trade, naming the messages it settles.
            for message_id in body["message_ids"]:
                self.journal.dead_lettered.add(message_id)
                self.journal.tick("dead_letter", message_id)
            self.dead_letters.append(
                {
                    "source": source,
                    "reason": reason,
                    "message_ids": body["message_ids"],
                    "tid": tid,
                    "shop": shop,
                }
            )
            return
        if "id" not in body:  # a refused trade's own JSON
            self.dead_letters.append({"source": source, "reason": reason, "tid": tid, "shop": shop})
            return
        self.journal.dead_lettered.add(body["id"])
        self.journal.tick("dead_letter", body["id"])
        self.dead_letters.append(
            {"source": source, "reason": reason, "id": body["id"], "tid": tid, "shop": shop}
        )

    @property
    def committed_tids(self) -> list[int]:
        return [t.tid for batch in self.batches for t in batch]


class FakeChannel:
    """The TMC session: `deliver()` hands a message to the handler as the session would; `run()`
    first delivers `preloaded`, then waits for `stop()`. Confirms are checked by the journal."""

    def __init__(
        self, handler: MessageHandler, journal: Journal, preloaded: Sequence[TmcMessage] = ()
    ) -> None:
        self.handler = handler
        self.journal = journal
        self.preloaded = list(preloaded)
        self.failed: list[tuple[int, str]] = []
        self.run_error: BaseException | None = None
        self.stopped = False
        self._stop = asyncio.Event()
        self.connected = True

    async def deliver(self, msg: TmcMessage) -> None:
        tid: int | None
        try:
            tid = int(json.loads(msg.content, strict=False)["tid"])
        except (ValueError, KeyError, TypeError):
            tid = None
        self.journal.received(msg, tid)
        await self.handler(msg)

    async def run(self) -> None:
        for msg in self.preloaded:
            await self.deliver(msg)
        if self.run_error is not None:
            raise self.run_error
        await self._stop.wait()

    def stop(self) -> None:
        self.stopped = True
        self._stop.set()

    async def confirm(self, message_id: int) -> None:
        self.journal.confirm(message_id)

    async def confirm_all(self, message_ids: Sequence[int]) -> int:
        for message_id in message_ids:
            self.journal.confirm(message_id)
        return len(message_ids)

    async def fail(self, message_id: int, reason: str) -> None:
        self.journal.tick("fail", message_id)
        self.failed.append((message_id, reason))

    @property
    def failed_ids(self) -> list[int]:
        return [mid for mid, _ in self.failed]
