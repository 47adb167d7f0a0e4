"""Message → frame bytes (docs/tmc-protocol.md#frame-layout). Pure, no I/O.

    uint8 version (2) · uint8 type · headers (int16 type + payload)… · int16 0 (EndOfHeaders)

Custom headers form the message's `content`; their values carry a one-byte format. A value whose width
or type cannot be known (a plain int, a naive datetime) is refused with TmcEncodeError rather than
guessed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from taobao.tmc.frame import (
    EPOCH,
    I16,
    I32,
    I64,
    INT_STRUCTS,
    PROTOCOL_VERSION,
    U8,
    HeaderType,
    Message,
    MessageType,
    TmcEncodeError,
    TypedInt,
    Value,
    ValueFormat,
)

_ONE_MS = timedelta(milliseconds=1)
_HEADER = {h: I16.pack(h) for h in HeaderType}
_FORMAT = {f: U8.pack(f) for f in ValueFormat}
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


def _counted(text: str | None, what: str) -> bytes:
    if not text:
        return b"\x00\x00\x00\x00"
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TmcEncodeError(f"{what} is not encodable as UTF-8: {exc.reason}") from None
    return I32.pack(len(raw)) + raw


def _int32(value: int, what: str) -> bytes:
    if not _INT32_MIN <= value <= _INT32_MAX:
        raise TmcEncodeError(f"{what} {value} does not fit in int32")
    return I32.pack(value)


def datetime_to_epoch_ms(value: datetime) -> int:
    """Aware datetime → epoch milliseconds (floored). Naive datetimes are refused: they hide bugs."""
    if value.tzinfo is None:
        raise TmcEncodeError("naive datetime: Date values must be timezone-aware")
    return (value - EPOCH) // _ONE_MS


def _encode_value(value: Value, key: str) -> bytes:
    if value is None:
        return _FORMAT[ValueFormat.VOID]
    if isinstance(value, str):
        return _FORMAT[ValueFormat.COUNTED_STRING] + _counted(value, f"value of {key!r}")
    if isinstance(value, TypedInt):
        return _FORMAT[value.FORMAT] + INT_STRUCTS[value.FORMAT].pack(value)
    if isinstance(value, datetime):
        ms = datetime_to_epoch_ms(value)
        return _FORMAT[ValueFormat.DATE] + I64.pack(ms)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        if len(raw) > _INT32_MAX:
            raise TmcEncodeError(f"value of {key!r} is too long for a ByteArray")
        return _FORMAT[ValueFormat.BYTE_ARRAY] + I32.pack(len(raw)) + raw
    if isinstance(value, int):
        # bool and plain int land here: the width must be chosen explicitly
        # (docs/tmc-protocol.md#codec-pitfalls).
        raise TmcEncodeError(
            f"value of {key!r} is a plain {type(value).__name__}; use Byte, Int16, Int32 or Int64"
        )
    raise TmcEncodeError(f"value of {key!r} has unsupported type {type(value).__name__}")


def encode(message: Message) -> bytes:
    """Message → frame bytes, headers in the Java encoder's order (docs/tmc-protocol.md#frame-layout)."""
    if message.protocol_version != PROTOCOL_VERSION:
        raise TmcEncodeError(f"only protocol version 2 can be encoded, not {message.protocol_version}")
    parts = [bytes((PROTOCOL_VERSION, MessageType(message.message_type)))]
    if message.status_code is not None:
        parts += (_HEADER[HeaderType.STATUS_CODE], _int32(message.status_code, "StatusCode"))
    if message.status_phrase is not None:
        parts += (_HEADER[HeaderType.STATUS_PHRASE], _counted(message.status_phrase, "StatusPhrase"))
    if message.flag is not None:
        parts += (_HEADER[HeaderType.FLAG], _int32(message.flag, "Flag"))
    if message.token is not None:
        parts += (_HEADER[HeaderType.TOKEN], _counted(message.token, "Token"))
    custom = _HEADER[HeaderType.CUSTOM]
    for key, value in message.content.items():
        parts += (custom, _counted(key, "content key"), _encode_value(value, key))
    parts.append(_HEADER[HeaderType.END_OF_HEADERS])
    return b"".join(parts)
