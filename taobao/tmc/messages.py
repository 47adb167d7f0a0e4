"""The TMC messages the service and the stand-in exchange, built and read (docs/tmc-protocol.md#connect,
docs/tmc-protocol.md#pushed-messages, docs/tmc-protocol.md#confirm-fail-pull): the signed CONNECT and its
answers, pulls, confirms and failures, pushes, and a push read into a `TmcMessage`. Pure, no I/O.
"""

from __future__ import annotations

import gzip
import zlib
from datetime import datetime

from common.text import sanitize
from taobao.signing import sign
from taobao.tmc.events import TmcMessage
from taobao.tmc.frame import (
    Byte,
    Int32,
    Int64,
    Message,
    MessageKind,
    MessageType,
    TmcDecodeError,
    TypedInt,
    Value,
)

# The JSDK uploads at most 128 characters of a failure reason ("错误信息上传128个字节到服务端").
FAILED_REASON_LIMIT = 128
# A gzip body larger than this once inflated is refused rather than held in memory.
MAX_INFLATED_CONTENT = 16 * 1024 * 1024


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
        topic=sanitize(topic),
        content=text,
        time=published if isinstance(published, datetime) else None,
        nick=sanitize(nick) if isinstance(nick, str) and nick else None,
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
