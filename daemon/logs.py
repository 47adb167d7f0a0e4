"""Log output: one JSON object per line with stable keys (docs/design.md#structured-logs), or plain text for a
terminal.

Call sites log with `extra={"action": ..., "tid": ..., "shop": ..., "message_id": ..., "attempt": ...}`;
these keys come out under the same names whenever they are present, so log queries never depend on the
wording of a message.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

# The structured keys, in output order. Anything else passed in `extra` is not emitted: a fixed schema
# keeps log indexes small and stops a stray object (a session, a whole trade) from reaching the output.
CONTEXT_KEYS = ("action", "tid", "shop", "message_id", "attempt")


def _context(record: logging.LogRecord) -> dict[str, Any]:
    found = {}
    for key in CONTEXT_KEYS:
        value = getattr(record, key, None)
        if value is not None:
            found[key] = value
    return found


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "action"?, "msg", "tid"?, "shop"?, "message_id"?, "attempt"?, "exc"?}`"""

    def format(self, record: logging.LogRecord) -> str:
        context = _context(record)
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        if "action" in context:
            line["action"] = context.pop("action")
        line["msg"] = record.getMessage()
        line.update(context)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`2024-11-11 00:00:01,123 INFO listener.workers message [action=fetched tid=1 shop=s]`"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = _context(record)
        if not context:
            return text
        pairs = " ".join(f"{key}={value}" for key, value in context.items())
        head, newline, rest = text.partition("\n")  # keep a traceback below the tagged first line
        return f"{head} [{pairs}]{newline}{rest}"


def configure_logging(
    level: str = "INFO", fmt: str = "json", stream: TextIO | None = None
) -> logging.Handler:
    """Route the root logger to `stream` (stderr by default) in the chosen format; returns the handler
    so a caller (a test) can remove it again. Replaces handlers this function installed before."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.set_name("order-sync")
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "order-sync":
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
