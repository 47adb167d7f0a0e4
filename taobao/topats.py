"""A TOPATS result file (docs/top-api.md#topats): downloading it and reading it. The file is a zip whose
text entries hold one trade per line, each shaped like a fullinfo response
(`{"trade_fullinfo_get_response": {"trade": {...}}}`).

The download is streamed to disk and checked against its MD5 check code; the reading goes entry by
entry and line by line, so an export of 100 000 trades never sits in memory at once. Lines that do not
parse or validate come out as `RejectedItem`s for the dead-letter table.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
from pydantic import ValidationError

from taobao.envelope import decode_body, response_key, unwrap_response
from taobao.errors import TopatsDownloadError
from taobao.fields import TOPATS_RESULT_GET, TRADE_FULLINFO_GET
from taobao.models import RejectedItem, Trade

_WRAPPER = response_key(TRADE_FULLINFO_GET)
# What a successful download looks like (Java AtsUtils); zip types added for other servers.
_DOWNLOAD_CONTENT_TYPES = frozenset(
    {
        "application/octet-stream",
        "application/java-archive",
        "application/zip",
        "application/x-zip-compressed",
    }
)
_DOWNLOAD_CHUNK = 64 * 1024
# How much of an entry is inflated at a time when reading lines in chunks: few, large reads keep the
# reading thread's hold on the GIL short.
_READ_BLOCK = 4 * 1024 * 1024


async def download_result(
    http: aiohttp.ClientSession,
    url: str,
    dest: str | os.PathLike[str] | IO[bytes],
    *,
    check_code: str | None,
    socket_timeouts: aiohttp.ClientTimeout,
) -> None:
    """Stream the result file at `url` into `dest` (a path, or a writable binary file), checking its MD5
    against `check_code`. A path is written through a `.part` file and appears only when the check
    passes. Not a TOP API call: no quota taken."""
    if isinstance(dest, (str, os.PathLike)):
        final = Path(dest)
        partial = final.with_name(final.name + ".part")
        try:
            with partial.open("wb") as fh:
                await _download_into(http, url, fh, check_code, socket_timeouts)
            partial.replace(final)
        finally:
            partial.unlink(missing_ok=True)
    else:
        await _download_into(http, url, dest, check_code, socket_timeouts)


async def _download_into(
    http: aiohttp.ClientSession,
    url: str,
    out: IO[bytes],
    check_code: str | None,
    socket_timeouts: aiohttp.ClientTimeout,
) -> None:
    digest = hashlib.md5()
    try:
        async with http.get(url, timeout=socket_timeouts) as resp:
            content_type = resp.content_type
            if resp.status != 200:
                raise TopatsDownloadError(f"download failed: HTTP {resp.status}", method=TOPATS_RESULT_GET)
            if content_type not in _DOWNLOAD_CONTENT_TYPES:
                # Java AtsUtils: any other content type means the body is an error response.
                body = await resp.read()
                document = decode_body(body, method=TOPATS_RESULT_GET)
                if "error_response" in document:
                    unwrap_response(document, TOPATS_RESULT_GET)  # raises the TopError it holds
                raise TopatsDownloadError(
                    f"download returned {content_type!r} instead of a file", method=TOPATS_RESULT_GET
                )
            async for chunk in resp.content.iter_chunked(_DOWNLOAD_CHUNK):
                digest.update(chunk)
                # Local writes of 64 KiB do not stall the loop noticeably.
                out.write(chunk)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        # No `from exc`: aiohttp errors carry the URL, which may hold an access token.
        raise TopatsDownloadError(
            f"download failed: {type(exc).__name__}", method=TOPATS_RESULT_GET
        ) from None
    if check_code is not None and digest.hexdigest() != check_code.strip().lower():
        raise TopatsDownloadError("download does not match its check code", method=TOPATS_RESULT_GET)


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


@dataclass(frozen=True, slots=True)
class LineChunk:
    """Consecutive lines of one entry of a result file, as bytes without their newline (blank ones
    included, so `lines[i]` is line `first + i` of `entry`)."""

    entry: str
    first: int
    lines: list[bytes]

    def where(self, index: int) -> str:
        return f"{self.entry}:{self.first + index}"

    def parse(self, index: int) -> Trade | RejectedItem | None:
        """Line `index` as `iter_trades` reads it (None: blank)."""
        line = self.lines[index].decode("utf-8", errors="replace")
        return parse_line(line, where=self.where(index)) if line.strip() else None


def iter_line_chunks(source: str | os.PathLike[str] | IO[bytes], size: int) -> Iterator[LineChunk]:
    """The lines of the zip at `source` in chunks of at most `size` lines (a chunk never spans two
    entries), unparsed: split out of large inflated blocks, no per-line decoding."""
    with zipfile.ZipFile(source) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            with archive.open(info) as raw:
                first, pending, rest = 1, list[bytes](), b""
                while block := raw.read(_READ_BLOCK):
                    lines = (rest + block).split(b"\n")
                    rest = lines.pop()
                    pending += lines
                    while len(pending) >= size:
                        yield LineChunk(info.filename, first, pending[:size])
                        first += size
                        del pending[:size]
                if rest:
                    pending.append(rest)
                if pending:
                    yield LineChunk(info.filename, first, pending)


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
