"""The market's changes as TMC pushes: every change is published on the app's queue, as Taobao pushes
trade topics to a subscribed app, and (with the refund_topics knob) a refund also as refund topics."""

from __future__ import annotations

import json
from typing import Any

from simulator.lifecycle import full_topic
from simulator.market import Market, MarketChange
from simulator.tmc_server import LostMessage, TmcServer

REFUND_TOPICS = ("taobao_refund_RefundCreated", "taobao_refund_RefundSuccess")
_REFUNDING_TOPICS = frozenset({full_topic("TradePartlyRefund"), full_topic("TradeClose")})


class ChangePublisher:
    """A market change listener that publishes on `tmc` for (app_key, group), and keeps which market
    change each withheld message announced."""

    def __init__(self, market: Market, tmc: TmcServer, app_key: str, group: str) -> None:
        self._market = market
        self._tmc = tmc
        self._app_key = app_key
        self._group = group
        # Message id → market change seq of the messages the TMC server withheld (other messages, such
        # as refund topics, are not market changes and have none).
        self._withheld_seq: dict[int, int] = {}

    def __call__(self, change: MarketChange) -> None:
        withheld_before = len(self._tmc.stats.lost)
        message_id = self._push(change, change.topic, change.content)
        if len(self._tmc.stats.lost) > withheld_before:
            self._withheld_seq[message_id] = change.seq
        if self._tmc.faults.refund_topics and change.topic in _REFUNDING_TOPICS:
            self._publish_refund(change)

    def _push(self, change: MarketChange, topic: str, content: dict[str, Any]) -> int:
        return self._tmc.publish(
            self._app_key,
            topic=topic,
            content=json.dumps(content, ensure_ascii=False),
            nick=change.seller_nick,
            user_id=change.seller_id,
            time=change.modified,
            group=self._group,
        )

    def _publish_refund(self, change: MarketChange) -> None:
        """The refund topics of a refund the market just made: the market refunds in one step, so the
        refund is created and succeeds at the same instant (in production days can pass between)."""
        trade = self._market.trade(change.tid)
        oid = change.content.get("oid")
        order = next(
            (o for o in (trade or {}).get("orders", {}).get("order", []) if o.get("oid") == oid), None
        )
        if trade is None or order is None or order.get("refund_status") != "SUCCESS":
            return  # a close before payment, not a refund
        content = {
            "bill_type": "refund_bill",
            "buyer_nick": trade.get("buyer_nick"),
            "buyer_open_uid": trade.get("buyer_open_uid"),
            "modified": trade["modified"],
            "oid": oid,
            "refund_fee": order.get("payment"),
            "refund_id": order.get("refund_id"),
            "refund_phase": "onsale",  # the market refunds only before a trade finishes
            "seller_nick": change.seller_nick,
            "tid": change.tid,
        }
        for topic in REFUND_TOPICS:
            self._push(change, topic, {k: v for k, v in content.items() if v is not None})

    def summary(self) -> dict[str, Any]:
        """Push-side counters and the messages the server withheld (only reconciliation recovers them)."""
        return {
            **self._tmc.stats.counters(),
            "pending": self._tmc.pending(self._app_key, self._group),
            # `seq`: the market change a withheld message announced (None: not a market change).
            "withheld": [self._withheld_json(m) for m in self._tmc.withheld],
            "faults": self._tmc.faults.to_json(),
            # Whose messages are delivered: the sellers permitted (`required` off: every seller's).
            "permits": {"required": self._tmc.permits.required, "users": sorted(self._tmc.permits.users)},
        }

    def _withheld_json(self, message: LostMessage) -> dict[str, Any]:
        return {
            "id": message.id,
            "tid": message.tid,
            "topic": message.topic,
            "reason": message.reason,
            "seq": self._withheld_seq.get(message.id),
        }
