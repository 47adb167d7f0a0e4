"""TMC wire codec: top-link "endpoint" messages, protocol version 2 (docs/tmc-protocol.md#frame-layout,
docs/tmc-protocol.md#message-types, docs/tmc-protocol.md#connect, docs/tmc-protocol.md#pushed-messages,
docs/tmc-protocol.md#confirm-fail-pull). Pure, no I/O.

One WebSocket binary frame carries one message:

    uint8 version (2) · uint8 type · headers (int16 type + payload)… · int16 0 (EndOfHeaders)

The codec's names in one namespace (`from taobao.tmc import codec`), each defined in the module that
does one part of the work, in the order a frame is handled:

    taobao.tmc.frame     the model: message, header and value types, width-carrying ints, `Message`
    taobao.tmc.reader    frame bytes → Message (`decode`)
    taobao.tmc.writer    Message → frame bytes (`encode`)
    taobao.tmc.messages  the messages themselves: CONNECT and its answers, pulls, confirms, failures,
                         pushes, and a push read into a `TmcMessage` (`parse_push`)
"""

from __future__ import annotations

from taobao.tmc.frame import (
    PROTOCOL_VERSION,
    Byte,
    HeaderType,
    Int16,
    Int32,
    Int64,
    Message,
    MessageKind,
    MessageType,
    TmcDecodeError,
    TmcEncodeError,
    TmcUnknownHeader,
    TypedInt,
    Value,
    ValueFormat,
)
from taobao.tmc.messages import (
    FAILED_REASON_LIMIT,
    MAX_INFLATED_CONTENT,
    confirm,
    connect_ack,
    connect_refusal,
    connect_request,
    connect_sign,
    failed,
    message_id_of,
    parse_push,
    pull_request,
    push,
    send_ack,
)
from taobao.tmc.reader import decode, epoch_ms_to_datetime
from taobao.tmc.writer import datetime_to_epoch_ms, encode

__all__ = [
    "FAILED_REASON_LIMIT",
    "MAX_INFLATED_CONTENT",
    "PROTOCOL_VERSION",
    "Byte",
    "HeaderType",
    "Int16",
    "Int32",
    "Int64",
    "Message",
    "MessageKind",
    "MessageType",
    "TmcDecodeError",
    "TmcEncodeError",
    "TmcUnknownHeader",
    "TypedInt",
    "Value",
    "ValueFormat",
    "confirm",
    "connect_ack",
    "connect_refusal",
    "connect_request",
    "connect_sign",
    "datetime_to_epoch_ms",
    "decode",
    "encode",
    "epoch_ms_to_datetime",
    "failed",
    "message_id_of",
    "parse_push",
    "pull_request",
    "push",
    "send_ack",
]
