"""TMC wire codec: top-link "endpoint" messages, protocol version 2 (docs/tmc-protocol.md#frame-layout,
docs/tmc-protocol.md#message-types, docs/tmc-protocol.md#connect, docs/tmc-protocol.md#pushed-messages,
docs/tmc-protocol.md#confirm-fail-pull). Pure, no I/O.

One WebSocket binary frame carries one message:

    uint8 version (2) · uint8 type · headers (int16 type + payload)… · int16 0 (EndOfHeaders)

Every integer is little-endian and signed. Custom headers form the message's `content`; their values
carry a one-byte format. Python's `int` alone cannot say which width a value has, so integer values
are the `Byte`/`Int16`/`Int32`/`Int64` subclasses of `int`: they compare and compute like ints, and
re-encode with the width they were decoded with. The other formats map one-to-one onto Python types:
Void ↔ None, CountedString ↔ str, Date ↔ aware datetime (epoch milliseconds), ByteArray ↔ bytes.
"""

from __future__ import annotations

import enum
import gzip
import struct
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import ClassVar, Self

from common.errors import OrderSyncError
from taobao.signing import sign
from taobao.tmc.events import TmcMessage

PROTOCOL_VERSION = 2
# The JSDK uploads at most 128 characters of a failure reason ("错误信息上传128个字节到服务端").
FAILED_REASON_LIMIT = 128
# A gzip body larger than this once inflated is refused rather than held in memory.
MAX_INFLATED_CONTENT = 16 * 1024 * 1024


class MessageType(enum.IntEnum):
    CONNECT = 0
    CONNECTACK = 1
    SEND = 2
    SENDACK = 3


class HeaderType(enum.IntEnum):
    END_OF_HEADERS = 0
    CUSTOM = 1
    STATUS_CODE = 2
    STATUS_PHRASE = 3
    FLAG = 4
    TOKEN = 5


class ValueFormat(enum.IntEnum):
    VOID = 0
    COUNTED_STRING = 1
    BYTE = 2
    INT16 = 3
    INT32 = 4
    INT64 = 5
    DATE = 6
    BYTE_ARRAY = 7


class MessageKind(enum.IntEnum):
    """The `__kind` content value of a SEND (docs/tmc-protocol.md#message-kinds)."""

    NONE = 0
    PULL_REQUEST = 1
    CONFIRM = 2
    DATA = 3
    FAILED = 20


class TmcDecodeError(OrderSyncError):
    """Bytes that are not a well-formed TMC v2 message (or a push missing its required fields)."""


class TmcEncodeError(OrderSyncError):
    """A `Message` that cannot be put on the wire (value out of range, untyped int, naive datetime…)."""


class TypedInt(int):
    """An int that remembers its wire width."""

    __slots__ = ()
    FORMAT: ClassVar[ValueFormat]
    BITS: ClassVar[int]

    def __new__(cls, value: int = 0) -> Self:
        number = int.__new__(cls, value)
        limit = 1 << (cls.BITS - 1)
        if not -limit <= number < limit:
            raise TmcEncodeError(f"{int(number)} does not fit in a signed {cls.BITS}-bit {cls.__name__}")
        return number

    def __repr__(self) -> str:
        return f"{type(self).__name__}({int(self)})"


class Byte(TypedInt):
    __slots__ = ()
    FORMAT = ValueFormat.BYTE
    BITS = 8


class Int16(TypedInt):
    __slots__ = ()
    FORMAT = ValueFormat.INT16
    BITS = 16


class Int32(TypedInt):
    __slots__ = ()
    FORMAT = ValueFormat.INT32
    BITS = 32


class Int64(TypedInt):
    __slots__ = ()
    FORMAT = ValueFormat.INT64
    BITS = 64


Value = None | str | bytes | datetime | TypedInt


@dataclass(kw_only=True, slots=True)
class Message:
    """One TMC message. Headers left as None are not written."""

    protocol_version: int = PROTOCOL_VERSION
    message_type: MessageType
    status_code: int | None = None
    status_phrase: str | None = None
    flag: int | None = None
    token: str | None = field(default=None, repr=False)
    content: dict[str, Value] = field(default_factory=dict)

    @property
    def kind(self) -> int | None:
        """`__kind` as a plain int, or None when absent or not an integer."""
        value = self.content.get("__kind")
        return int(value) if isinstance(value, TypedInt) else None


# --------------------------------------------------------------------------------------------- encoding

_U8 = struct.Struct("<B")
_I8 = struct.Struct("<b")
_I16 = struct.Struct("<h")
_I32 = struct.Struct("<i")
_I64 = struct.Struct("<q")
_INT_STRUCTS: dict[ValueFormat, struct.Struct] = {
    ValueFormat.BYTE: _I8,
    ValueFormat.INT16: _I16,
    ValueFormat.INT32: _I32,
    ValueFormat.INT64: _I64,
}
_INT_TYPES: dict[ValueFormat, type[TypedInt]] = {
    ValueFormat.BYTE: Byte,
    ValueFormat.INT16: Int16,
    ValueFormat.INT32: Int32,
    ValueFormat.INT64: Int64,
}
_INT_TYPES_BY_CODE: dict[int, type[TypedInt]] = {int(k): v for k, v in _INT_TYPES.items()}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_HEADER = {h: _I16.pack(h) for h in HeaderType}
_FORMAT = {f: _U8.pack(f) for f in ValueFormat}
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


def _counted(text: str | None, what: str) -> bytes:
    if not text:
        return b"\x00\x00\x00\x00"
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TmcEncodeError(f"{what} is not encodable as UTF-8: {exc.reason}") from None
    return _I32.pack(len(raw)) + raw


def _int32(value: int, what: str) -> bytes:
    if not _INT32_MIN <= value <= _INT32_MAX:
        raise TmcEncodeError(f"{what} {value} does not fit in int32")
    return _I32.pack(value)


def datetime_to_epoch_ms(value: datetime) -> int:
    """Aware datetime → epoch milliseconds (floored). Naive datetimes are refused: they hide bugs."""
    if value.tzinfo is None:
        raise TmcEncodeError("naive datetime: Date values must be timezone-aware")
    return (value - _EPOCH) // _ONE_MS


def _encode_value(value: Value, key: str) -> bytes:
    if value is None:
        return _FORMAT[ValueFormat.VOID]
    if isinstance(value, str):
        return _FORMAT[ValueFormat.COUNTED_STRING] + _counted(value, f"value of {key!r}")
    if isinstance(value, TypedInt):
        return _FORMAT[value.FORMAT] + _INT_STRUCTS[value.FORMAT].pack(value)
    if isinstance(value, datetime):
        ms = datetime_to_epoch_ms(value)
        return _FORMAT[ValueFormat.DATE] + _I64.pack(ms)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        if len(raw) > _INT32_MAX:
            raise TmcEncodeError(f"value of {key!r} is too long for a ByteArray")
        return _FORMAT[ValueFormat.BYTE_ARRAY] + _I32.pack(len(raw)) + raw
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


# --------------------------------------------------------------------------------------------- decoding
# One flat loop with inline bounds checks: decoding runs once per pushed message, so it avoids a
# method call per field. Error texts are built only when something is wrong.

_unpack_i16 = _I16.unpack_from
_unpack_i32 = _I32.unpack_from
_unpack_i64 = _I64.unpack_from
_INT_READERS: dict[int, tuple[type[TypedInt], struct.Struct]] = {
    int(f): (_INT_TYPES[f], _INT_STRUCTS[f]) for f in _INT_TYPES
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
        return _EPOCH + timedelta(milliseconds=ms)
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
            raise TmcDecodeError(f"unknown header type {header} at offset {pos - 2}")


# --------------------------------------------------------------------------------------------- builders


def connect_sign(*, app_key: str, group_name: str, timestamp: str, secret: str) -> str:
    """The CONNECT signature: TOP md5 over app_key, group_name and timestamp only
    (docs/tmc-protocol.md#connect-signing)."""
    params = {"app_key": app_key, "group_name": group_name, "timestamp": timestamp}
    return sign(params, secret, "md5")


def connect_request(
    *,
    app_key: str,
    group_name: str,
    timestamp_ms: int,
    secret: str,
    sdk: str,
    intranet_ip: str | None = None,
    flag: int = 1,
) -> Message:
    """A signed CONNECT (docs/tmc-protocol.md#connect). `flag` is the per-connection request counter (starts
    at 1)."""
    timestamp = str(timestamp_ms)
    content: dict[str, Value] = {
        "app_key": app_key,
        "group_name": group_name,
        "timestamp": timestamp,
        "sign": connect_sign(app_key=app_key, group_name=group_name, timestamp=timestamp, secret=secret),
        "sdk": sdk,
    }
    if intranet_ip:
        content["intranet_ip"] = intranet_ip
    return Message(message_type=MessageType.CONNECT, flag=flag, content=content)


def connect_ack(request: Message, *, token: str) -> Message:
    """Successful CONNECTACK: the request's version and flag echoed, the session token
    (docs/tmc-protocol.md#connectack)."""
    return Message(
        protocol_version=request.protocol_version,
        message_type=MessageType.CONNECTACK,
        flag=request.flag,
        token=token,
    )


def connect_refusal(request: Message, *, status_code: int, status_phrase: str) -> Message:
    """Failed CONNECTACK: status code and phrase, and no token (docs/tmc-protocol.md#connectack)."""
    return Message(
        protocol_version=request.protocol_version,
        message_type=MessageType.CONNECTACK,
        status_code=status_code,
        status_phrase=status_phrase,
        flag=request.flag,
    )


def send_ack(
    request: Message, *, status_code: int | None = None, status_phrase: str | None = None
) -> Message:
    """SENDACK to a client SEND: flag and token echoed; an error carries status code and phrase."""
    return Message(
        protocol_version=request.protocol_version,
        message_type=MessageType.SENDACK,
        status_code=status_code,
        status_phrase=status_phrase,
        flag=request.flag,
        token=request.token,
    )


def pull_request(token: str) -> Message:
    return Message(
        message_type=MessageType.SEND, token=token, content={"__kind": Byte(MessageKind.PULL_REQUEST)}
    )


def confirm(token: str, message_id: int) -> Message:
    return Message(
        message_type=MessageType.SEND,
        token=token,
        content={"__kind": Byte(MessageKind.CONFIRM), "id": Int64(message_id)},
    )


def failed(token: str, message_id: int, reason: str | None) -> Message:
    """Failed: the server redelivers later. The reason is cut to 128 characters, as the JSDK does."""
    return Message(
        message_type=MessageType.SEND,
        token=token,
        content={
            "__kind": Byte(MessageKind.FAILED),
            "id": Int64(message_id),
            "msg": None if reason is None else reason[:FAILED_REASON_LIMIT],
        },
    )


def push(
    token: str,
    *,
    message_id: int,
    topic: str,
    content: str,
    time: datetime,
    outtime: datetime,
    publisher: str,
    user_id: int,
    nick: str,
    gzip_content: bool = False,
    retried: int | None = None,
) -> Message:
    """A server → client data message (docs/tmc-protocol.md#pushed-messages); `content` optionally as a gzip
    ByteArray."""
    body: Value = gzip.compress(content.encode("utf-8"), mtime=0) if gzip_content else content
    fields: dict[str, Value] = {
        "id": Int64(message_id),
        "topic": topic,
        "content": body,
        "time": time,
        "outtime": outtime,
        "publisher": publisher,
        "userid": Int64(user_id),
        "nick": nick,
    }
    if retried is not None:
        fields["retried"] = Int32(retried)
    return Message(message_type=MessageType.SEND, token=token, content=fields)


# --------------------------------------------------------------------------------------------- reading pushes


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip wrapper
    try:
        out = inflater.decompress(data, MAX_INFLATED_CONTENT)
    except zlib.error as exc:
        raise TmcDecodeError(f"content is not valid gzip: {exc}") from None
    if inflater.unconsumed_tail:
        raise TmcDecodeError(f"gzip content inflates beyond {MAX_INFLATED_CONTENT} bytes")
    if not inflater.eof:
        raise TmcDecodeError("gzip content is truncated")
    return out


def message_id_of(message: Message) -> int | None:
    """The `id` content value as an int, whatever its width; None when absent or not an integer."""
    value = message.content.get("id")
    return int(value) if isinstance(value, TypedInt) else None


def parse_push(message: Message) -> TmcMessage:
    """A pushed data SEND → TmcMessage; `content` is gunzipped when it came as a ByteArray."""
    fields = message.content
    message_id = message_id_of(message)
    if message_id is None:
        raise TmcDecodeError(f"push has no integer id (got {type(fields.get('id')).__name__})")
    topic = fields.get("topic")
    if not isinstance(topic, str) or not topic:
        raise TmcDecodeError(f"push {message_id} has no topic")
    body = fields.get("content")
    if isinstance(body, bytes):
        try:
            text = _inflate(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TmcDecodeError(f"push {message_id}: gzip content is not UTF-8: {exc.reason}") from None
    elif isinstance(body, str):
        text = body
    elif body is None:
        text = ""
    else:
        raise TmcDecodeError(f"push {message_id}: content has unexpected type {type(body).__name__}")
    published = fields.get("time")
    nick = fields.get("nick")
    user_id = fields.get("userid")
    retried = fields.get("retried")
    return TmcMessage(
        id=message_id,
        topic=topic,
        content=text,
        time=published if isinstance(published, datetime) else None,
        nick=nick if isinstance(nick, str) and nick else None,
        user_id=_as_int(user_id),
        retried=_as_int(retried),
    )


def _as_int(value: Value) -> int | None:
    if isinstance(value, TypedInt):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None
