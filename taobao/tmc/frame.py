"""The TMC message model (docs/tmc-protocol.md#frame-layout, docs/tmc-protocol.md#message-types): message,
header and value types, the width-carrying integers, `Message`, and the wire layout the reader and the
writer share. Pure, no I/O.

Every integer on the wire is little-endian and signed. Python's `int` alone cannot say which width a
value has, so integer values are the `Byte`/`Int16`/`Int32`/`Int64` subclasses of `int`: they compare
and compute like ints, and re-encode with the width they were decoded with. The other formats map
one-to-one onto Python types: Void ↔ None, CountedString ↔ str, Date ↔ aware datetime (epoch
milliseconds), ByteArray ↔ bytes.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar, Self

from common.errors import OrderSyncError

PROTOCOL_VERSION = 2


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


class TmcUnknownHeader(TmcDecodeError):
    """A header type this protocol version does not define: nothing after it can be read (its length is
    unknown), so the frame is undecodable; counted apart, as a newer server's sign."""


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


# The wire layout shared by `taobao.tmc.reader` and `taobao.tmc.writer`.
U8 = struct.Struct("<B")
I16 = struct.Struct("<h")
I32 = struct.Struct("<i")
I64 = struct.Struct("<q")
INT_STRUCTS: dict[ValueFormat, struct.Struct] = {
    ValueFormat.BYTE: struct.Struct("<b"),
    ValueFormat.INT16: I16,
    ValueFormat.INT32: I32,
    ValueFormat.INT64: I64,
}
INT_TYPES: dict[ValueFormat, type[TypedInt]] = {
    ValueFormat.BYTE: Byte,
    ValueFormat.INT16: Int16,
    ValueFormat.INT32: Int32,
    ValueFormat.INT64: Int64,
}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
