from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from daemon.logs import JsonFormatter, TextFormatter, configure_logging


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging("DEBUG", "json", out)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


def record(**extra: object) -> logging.LogRecord:
    logger = logging.getLogger("listener.test")
    return logger.makeRecord(
        "listener.test", logging.WARNING, __file__, 1, "fetched %d", (5,), None, extra=extra
    )


def test_json_lines_have_stable_keys_in_order(stream: io.StringIO) -> None:
    logging.getLogger("listener.test").info(
        "committed %d trades", 3, extra={"action": "batch_committed", "tid": 42, "shop": "店", "ignored": "x"}
    )
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert list(line) == ["ts", "level", "logger", "action", "msg", "tid", "shop"]
    assert line["msg"] == "committed 3 trades"
    assert line["shop"] == "店"
    assert line["ts"].endswith("+00:00")


def test_json_omits_absent_keys_and_carries_tracebacks() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = record(message_id=9, attempt=2)
        rec.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(rec))
    assert "action" not in line
    assert "tid" not in line
    assert line["message_id"] == 9
    assert line["attempt"] == 2
    assert "ValueError: boom" in line["exc"]


def test_text_format_appends_the_context() -> None:
    text = TextFormatter().format(record(action="fetched", tid=1))
    assert text.endswith("fetched 5 [action=fetched tid=1]")
