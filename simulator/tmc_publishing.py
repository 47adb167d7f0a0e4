"""Accepting a message onto a TMC queue: its id, the checks that keep the sender from failing later, and
the faults that act at publish time (oversize padding, loss)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

from simulator.tmc_config import ServerState
from simulator.tmc_permits import TmcPermits
from simulator.tmc_queue import GroupQueue, QueuedMessage
from simulator.tmc_stats import LostMessage
from taobao.tmc import codec


class Publisher:
    """Numbers messages and hands them to their queue, or withholds them when a loss fault says so."""

    def __init__(
        self, shared: ServerState, queue_for: Callable[[str, str], GroupQueue], permits: TmcPermits
    ) -> None:
        self._queue_for = queue_for
        self._shared = shared
        self._permits = permits
        self._next_id = shared.config.first_message_id

    def publish(
        self, app_key: str, group: str, *, topic: str, content: str, nick: str, user_id: int, time: datetime
    ) -> int:
        """Accept one message for the (app_key, group) queue; returns its id."""
        check_publishable(topic=topic, content=content, nick=nick, user_id=user_id, time=time)
        message_id = self._next_id
        self._next_id += 1
        self._shared.stats.published += 1
        if self._oversize_due():
            padded = _padded(content, self._shared.faults.oversize_bytes)
            if padded is not None:
                content = padded
                self._shared.stats.oversized += 1
        entry = QueuedMessage(message_id, topic, content, time, nick, user_id, _tid_of(content))
        queue = self._queue_for(app_key, group)
        faults = self._shared.faults
        if not self._permits.allows(nick):
            self._withhold(entry, "not_permitted")  # the app never subscribed this seller
        elif faults.lose_fraction and self._shared.rng.random() < faults.lose_fraction:
            self._withhold(entry, "lose_fraction")
        elif faults.lose_while_disconnected and not queue.clients:
            self._withhold(entry, "disconnected")
        else:
            queue.publish(entry)
        return message_id

    def _oversize_due(self) -> bool:
        faults = self._shared.faults
        if faults.oversize_next > 0:
            faults.oversize_next -= 1
            return True
        return faults.oversize_every > 0 and self._shared.stats.published % faults.oversize_every == 0

    def _withhold(self, entry: QueuedMessage, reason: str) -> None:
        self._shared.stats.lost.append(LostMessage(entry.id, entry.tid, entry.topic, reason))


def check_publishable(*, topic: str, content: str, nick: str, user_id: int, time: datetime) -> None:
    """Refuse at publish time what could not be pushed later (the sender must not fail mid-queue)."""
    try:
        codec.Int64(user_id)
        codec.datetime_to_epoch_ms(time)
        for text in (topic, content, nick):
            text.encode("utf-8")
    except (codec.TmcEncodeError, UnicodeEncodeError, AttributeError) as exc:
        raise ValueError(f"message cannot be pushed: {exc}") from None
    if not topic:
        raise ValueError("message cannot be pushed: empty topic")


def _padded(content: str, size: int) -> str | None:
    """A JSON object `content` with a `padding` field that makes it more than `size` UTF-8 bytes long;
    None when the content is not a JSON object."""
    try:
        document = json.loads(content)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    document["padding"] = ""
    base = len(json.dumps(document, ensure_ascii=False).encode("utf-8"))
    document["padding"] = "x" * max(size - base + 1, 0)
    return json.dumps(document, ensure_ascii=False)


def _tid_of(content: str) -> int | None:
    """The trade id a trade message is about, for the ground-truth record of withheld messages."""
    try:
        document = json.loads(content)
    except ValueError:
        return None
    tid = document.get("tid") if isinstance(document, dict) else None
    if isinstance(tid, int):
        return tid
    if isinstance(tid, str) and tid.isdigit():
        return int(tid)
    return None
