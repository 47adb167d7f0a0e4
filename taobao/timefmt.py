"""TOP's clock: wall-clock strings `yyyy-MM-dd HH:mm:ss` in GMT+8 (docs/top-api.md#common-parameters,
docs/top-api.md#value-formats).

Converted once at the boundary (docs/design.md#time-at-the-boundary); everything inside is aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

GMT8 = timezone(timedelta(hours=8), "GMT+8")
TOP_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def parse_top_time(value: str) -> datetime:
    """`2024-05-01 12:00:00` (GMT+8) → aware datetime."""
    text = value.strip()
    # Every trade carries several of these; slicing the fixed layout costs a fifth of strptime.
    # Anything else goes through strptime, which raises the usual ValueError.
    digits = text[0:4] + text[5:7] + text[8:10] + text[11:13] + text[14:16] + text[17:19]
    if (
        len(text) == 19
        and text[4] + text[7] + text[10] + text[13] + text[16] == "-- ::"
        and (digits.isascii() and digits.isdigit())
    ):
        try:
            return datetime(
                int(text[0:4]), int(text[5:7]), int(text[8:10]),
                int(text[11:13]), int(text[14:16]), int(text[17:19]), tzinfo=GMT8,
            )  # fmt: skip
        except ValueError:
            pass
    return datetime.strptime(text, TOP_TIME_FORMAT).replace(tzinfo=GMT8)


def format_top_time(value: datetime) -> str:
    """Aware datetime → GMT+8 wall-clock string. Naive datetimes are refused: they hide bugs."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: TOP times must be timezone-aware")
    return value.astimezone(GMT8).strftime(TOP_TIME_FORMAT)


def epoch_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def from_epoch_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
