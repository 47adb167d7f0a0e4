"""Reading a TOPATS result file (docs/top-api.md#topats): a zip whose text entries hold one trade per line,
each shaped like a fullinfo response (`{"trade_fullinfo_get_response": {"trade": {...}}}`).

Streams entry by entry and line by line, so an export of 100 000 trades never sits in memory at once.
Lines that do not parse or validate come out as `RejectedItem`s for the dead-letter table.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterator
from typing import IO, Any

from pydantic import ValidationError

from taobao.envelope import response_key
from taobao.fields import TRADE_FULLINFO_GET
from taobao.models import RejectedItem, Trade

_WRAPPER = response_key(TRADE_FULLINFO_GET)


def iter_trades(source: str | os.PathLike[str] | IO[bytes]) -> Iterator[Trade | RejectedItem]:
    """Every trade in the zip at `source`, in file order."""
    with zipfile.ZipFile(source) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            with archive.open(info) as raw, io.TextIOWrapper(raw, encoding="utf-8", errors="replace") as text:
                for number, line in enumerate(text, start=1):
                    if line.strip():
                        yield parse_line(line, where=f"{info.filename}:{number}")


def parse_line(line: str, *, where: str = "") -> Trade | RejectedItem:
    """One line of a result file. Also accepts `{"trade": {...}}` and a bare trade object."""
    try:
        document: Any = json.loads(line, strict=False)
    except ValueError:
        return RejectedItem(raw=line, reason=f"{where}: not JSON")
    if isinstance(document, dict) and isinstance(document.get(_WRAPPER), dict):
        document = document[_WRAPPER]
    if isinstance(document, dict) and isinstance(document.get("trade"), dict):
        document = document["trade"]
    if not isinstance(document, dict):
        return RejectedItem(raw=line, reason=f"{where}: not a trade object")
    try:
        return Trade.model_validate(document)
    except ValidationError as exc:
        return RejectedItem(raw=document, reason=f"{where}: {exc.error_count()} validation error(s)")
