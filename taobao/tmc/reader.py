"""Frame bytes → Message (docs/tmc-protocol.md#frame-layout). Pure, no I/O; anything malformed raises
TmcDecodeError and nothing else.

One flat loop with inline bounds checks: decoding runs once per pushed message, so it avoids a method
call per field. Error texts are built only when something is wrong.
"""

from __future__ import annotations

import struct
from datetime import datetime, timedelta

from taobao.tmc.frame import (
    EPOCH,
    I16,
    I32,
    I64,
    INT_STRUCTS,
    INT_TYPES,
    PROTOCOL_VERSION,
    HeaderType,
    Message,
    MessageType,
    TmcDecodeError,
    TmcUnknownHeader,
    TypedInt,
    Value,
    ValueFormat,
)

_unpack_i16 = I16.unpack_from
_unpack_i32 = I32.unpack_from
_unpack_i64 = I64.unpack_from
_INT_READERS: dict[int, tuple[type[TypedInt], struct.Struct]] = {
    int(f): (INT_TYPES[f], INT_STRUCTS[f]) for f in INT_TYPES
}


# Plain ints: comparing against enum members costs an attribute lookup per field.
_END, _CUSTOM, _STATUS_CODE, _STATUS_PHRASE, _FLAG, _TOKEN = (int(h) for h in HeaderType)
_VOID, _STRING, _DATE, _BYTE_ARRAY = (
    int(f) for f in (ValueFormat.VOID, ValueFormat.COUNTED_STRING, ValueFormat.DATE, ValueFormat.BYTE_ARRAY)
)


def _name(what: str, key: str | None) -> str:
    return what if key is None else f"{what} of {key!r}"


def _truncated(what: str, size: int, at: int, end: int) -> TmcDecodeError:
    return TmcDecodeError(f"truncated: {what} needs {size} bytes at offset {at}, {end - at} left")


def _read_raw(buf: bytes, pos: int, end: int, what: str, key: str | None = None) -> tuple[bytes, int]:
    """A counted byte run (int32 length + bytes) at `pos`; returns it and the next offset."""
    if end - pos < 4:
        raise _truncated(f"length of {_name(what, key)}", 4, pos, end)
    size = _unpack_i32(buf, pos)[0]
    # top-link's Java reader maps a negative length to null; a negative length can only come from
    # a broken peer, so it is reported rather than guessed around.
    if size < 0:
        raise TmcDecodeError(f"negative length {size} for {_name(what, key)} at offset {pos}")
    pos += 4
    if end - pos < size:
        raise _truncated(_name(what, key), size, pos, end)
    return buf[pos : pos + size], pos + size


def _read_text(buf: bytes, pos: int, end: int, what: str, key: str | None = None) -> tuple[str, int]:
    raw, after = _read_raw(buf, pos, end, what, key)
    try:
        return raw.decode("utf-8"), after
    except UnicodeDecodeError as exc:
        offset = pos + 4 + exc.start
        raise TmcDecodeError(
            f"invalid UTF-8 in {_name(what, key)} at offset {offset}: {exc.reason}"
        ) from None


def epoch_ms_to_datetime(ms: int) -> datetime:
    """Epoch milliseconds → aware UTC datetime, exact (no float rounding)."""
    try:
        return EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        raise TmcDecodeError(f"Date {ms} ms is outside the representable range") from None


def _read_value(buf: bytes, pos: int, end: int, key: str) -> tuple[Value, int]:
    if pos >= end:
        raise _truncated(f"value format of {key!r}", 1, pos, end)
    code = buf[pos]
    pos += 1
    if code == _STRING:
        return _read_text(buf, pos, end, "value", key)
    reader = _INT_READERS.get(code)
    if reader is not None:
        int_type, fmt = reader
        if end - pos < fmt.size:
            raise _truncated(f"value of {key!r}", fmt.size, pos, end)
        return int_type(fmt.unpack_from(buf, pos)[0]), pos + fmt.size
    if code == _DATE:
        if end - pos < 8:
            raise _truncated(f"Date value of {key!r}", 8, pos, end)
        return epoch_ms_to_datetime(_unpack_i64(buf, pos)[0]), pos + 8
    if code == _VOID:
        return None, pos
    if code == _BYTE_ARRAY:
        return _read_raw(buf, pos, end, "ByteArray value", key)
    # Any unknown format code: top-link's reader falls back to a counted string.
    return _read_text(buf, pos, end, "value", key)


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Frame bytes → Message. Anything malformed raises TmcDecodeError (and nothing else)."""
    buf = bytes(data)
    end = len(buf)
    if end < 2:
        raise _truncated("message preamble", 2, 0, end)
    version, type_code = buf[0], buf[1]
    if version != PROTOCOL_VERSION:
        raise TmcDecodeError(f"unsupported protocol version {version} (only 2 is implemented)")
    if type_code > MessageType.SENDACK:
        raise TmcDecodeError(f"unknown message type {type_code}")
    message = Message(message_type=MessageType(type_code))
    content = message.content
    pos = 2
    while True:
        if end - pos < 2:
            raise _truncated("header type", 2, pos, end)
        header = _unpack_i16(buf, pos)[0]
        pos += 2
        if header == _CUSTOM:
            key, pos = _read_text(buf, pos, end, "content key")
            content[key], pos = _read_value(buf, pos, end, key)
        elif header == _END:
            # Bytes after EndOfHeaders are ignored, as top-link's decoder does: the frame ends the message.
            return message
        elif header in (_STATUS_CODE, _FLAG):
            if end - pos < 4:
                raise _truncated(HeaderType(header).name.title().replace("_", ""), 4, pos, end)
            value = _unpack_i32(buf, pos)[0]
            pos += 4
            if header == _FLAG:
                message.flag = value
            else:
                message.status_code = value
        elif header == _STATUS_PHRASE:
            message.status_phrase, pos = _read_text(buf, pos, end, "StatusPhrase")
        elif header == _TOKEN:
            message.token, pos = _read_text(buf, pos, end, "Token")
        else:
            raise TmcUnknownHeader(f"unknown header type {header} at offset {pos - 2}")
