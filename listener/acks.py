"""How a message's settlement reaches the server: Confirm or Failed through the channel, and for a
message quarantined, its dead-letter row first (docs/design.md#confirm-after-commit). The dispatcher
decides when; this module sends, counts and logs, and never lets a failed ack stop the stream.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from listener.metrics import ListenerMetrics
from listener.ports import MessageAcker, MessageWatch, TradeStore
from taobao.tmc.events import TmcMessage

log = logging.getLogger(__name__)

SOURCE = "stream"
# TMC uploads at most 128 characters of a Failed reason (docs/tmc-protocol.md#failed).
FAIL_REASON_MAX = 128


class Acks:
    def __init__(
        self,
        *,
        store: TradeStore,
        metrics: ListenerMetrics,
        acker: MessageAcker | None = None,
        watch: MessageWatch | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._acker = acker
        self._watch = watch

    def settle_through(self, acker: MessageAcker) -> None:
        self._acker = acker

    async def quarantine(
        self, message: TmcMessage, kind: str, reason: str, *, tid: int | None, shop: str | None
    ) -> None:
        """Write `message` to the dead-letter table, then confirm it; without the row, fail it (it
        comes back) rather than lose it."""
        try:
            await self._store.dead_letter(
                source=SOURCE, reason=reason, payload=_payload(message), tid=tid, shop=shop
            )
        except Exception:
            # Without the dead-letter row, confirming would lose the message: let it come back.
            log.exception(
                "could not write dead letter; message left for redelivery",
                extra={"action": "dead_letter_failed", "tid": tid, "shop": shop, "message_id": message.id},
            )
            self._metrics.left_unconfirmed.inc(reason="dead_letter_failed")
            await self.fail(message.id, "dead letter write failed")
            return
        self._metrics.dead_letters.inc(reason=kind)
        log.warning(
            "message quarantined: %s",
            reason,
            extra={"action": "dead_lettered", "tid": tid, "shop": shop, "message_id": message.id},
        )
        await self.confirm(message.id)

    async def fail_unheld(self, message: TmcMessage, kind: str, reason: str) -> None:
        """Hand back a message that was never held (counted under `kind`)."""
        self._metrics.left_unconfirmed.inc(reason=kind)
        await self.fail(message.id, reason)

    async def confirm(self, message_id: int) -> None:
        await self.confirm_all([message_id])

    async def confirm_all(self, message_ids: Sequence[int]) -> None:
        """Confirm the messages one commit settled, in one write to the server."""
        if not message_ids:
            return
        if self._watch is not None:
            # Committed (or quarantined) is what counts; a confirm that cannot be sent changes nothing.
            for message_id in message_ids:
                self._watch.settled(message_id)
        channel = self._channel()
        try:
            sent = await channel.confirm_all(message_ids)
        except Exception:
            # The commit stands; the server will redeliver and the refetch is idempotent.
            self._metrics.ack_errors.inc(call="confirm")
            log.warning(
                "confirm failed",
                exc_info=True,
                extra={"action": "confirm_failed", "message_id": message_ids[0], "count": len(message_ids)},
            )
        else:
            if sent:
                self._metrics.confirmed.inc(sent)

    async def fail(self, message_id: int, reason: str) -> None:
        channel = self._channel()
        try:
            await channel.fail(message_id, reason[:FAIL_REASON_MAX])
        except Exception:
            # Not sending Failed only delays redelivery until the server's confirm timeout.
            self._metrics.ack_errors.inc(call="fail")
            log.warning(
                "fail call failed", exc_info=True, extra={"action": "fail_failed", "message_id": message_id}
            )

    def _channel(self) -> MessageAcker:
        if self._acker is None:
            raise RuntimeError("the dispatcher settles messages only after settle_through(channel)")
        return self._acker


def _payload(message: TmcMessage) -> str:
    """The whole message as received, for the dead-letter row (content kept verbatim as a string)."""
    return json.dumps(
        {
            "id": message.id,
            "topic": message.topic,
            "nick": message.nick,
            "user_id": message.user_id,
            "time": message.time.isoformat() if message.time else None,
            "content": message.content,
        },
        ensure_ascii=False,
    )
