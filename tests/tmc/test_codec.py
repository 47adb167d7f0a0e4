"""TMC v2 codec: the byte vectors of docs/tmc-protocol.md#byte-vectors, builders, and precise errors for
malformed input."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta, timezone

import pytest

from common.errors import OrderSyncError
from taobao.tmc import codec
from taobao.tmc.codec import Byte, Int16, Int32, Int64, Message, MessageType, TmcDecodeError, TmcEncodeError

TOKEN = "32e88d28-20b1-40dd-8e2d-abec197277fe"
# docs/tmc-protocol.md#byte-vectors.
CONNECTACK_VECTOR = bytes.fromhex("02 01 | 04 00 01 00 00 00 | 05 00 24 00 00 00".replace("|", ""))
CONNECTACK_VECTOR += TOKEN.encode() + bytes.fromhex("00 00")
PULL_REQUEST_VECTOR = (
    bytes.fromhex("0202 0500 24000000")
    + TOKEN.encode()
    + bytes.fromhex("0100 06000000 5f5f6b696e64 02 01 0000")
)
CONFIRM_VECTOR = (
    bytes.fromhex("0202 0500 24000000")
    + TOKEN.encode()
    + bytes.fromhex("0100 06000000 5f5f6b696e64 02 02 0100 02000000 6964 05 cb04fb711f010000 0000")
)


def test_captured_connectack_decodes_and_reencodes_byte_for_byte() -> None:
    message = codec.decode(CONNECTACK_VECTOR)

    assert message.protocol_version == 2
    assert message.message_type is MessageType.CONNECTACK
    assert message.flag == 1
    assert message.token == TOKEN
    assert message.status_code is None
    assert message.status_phrase is None
    assert message.content == {}
    assert codec.encode(message) == CONNECTACK_VECTOR
    connect = Message(message_type=MessageType.CONNECT, flag=1)
    assert codec.encode(codec.connect_ack(connect, token=TOKEN)) == CONNECTACK_VECTOR


def test_pull_request_and_confirm_match_the_spec_vectors() -> None:
    assert codec.encode(codec.pull_request(TOKEN)) == PULL_REQUEST_VECTOR
    assert codec.encode(codec.confirm(TOKEN, 1234567890123)) == CONFIRM_VECTOR
    decoded = codec.decode(CONFIRM_VECTOR)
    assert type(decoded.content["__kind"]) is Byte
    assert decoded.kind == codec.MessageKind.CONFIRM
    assert type(decoded.content["id"]) is Int64
    assert codec.message_id_of(decoded) == 1234567890123


def test_connect_request_carries_the_signed_login_fields() -> None:
    request = codec.connect_request(
        app_key="12345678",
        group_name="default",
        timestamp_ms=1700000000000,
        secret="secret",
        sdk="taobao-order-sync-0.1",
        intranet_ip="10.0.0.7",
    )
    decoded = codec.decode(codec.encode(request))

    assert decoded.message_type is MessageType.CONNECT
    assert decoded.flag == 1
    assert decoded.token is None
    # The worked example of docs/tmc-protocol.md#connect-signing.
    assert decoded.content == {
        "app_key": "12345678",
        "group_name": "default",
        "timestamp": "1700000000000",
        "sign": "F2070B19BC1E0B0DED23DCB4AB23BE3D",
        "sdk": "taobao-order-sync-0.1",
        "intranet_ip": "10.0.0.7",
    }


def test_refusal_has_status_and_no_token_and_send_ack_echoes_flag_and_token() -> None:
    request = Message(message_type=MessageType.CONNECT, flag=3)
    refusal = codec.decode(codec.encode(codec.connect_refusal(request, status_code=401, status_phrase="bad")))
    assert (refusal.status_code, refusal.status_phrase, refusal.flag, refusal.token) == (401, "bad", 3, None)

    send = Message(message_type=MessageType.SEND, flag=9, token=TOKEN)
    ack = codec.decode(codec.encode(codec.send_ack(send, status_code=400, status_phrase="nope")))
    assert (ack.message_type, ack.status_code, ack.status_phrase, ack.flag, ack.token) == (
        MessageType.SENDACK,
        400,
        "nope",
        9,
        TOKEN,
    )


def test_headers_are_written_in_the_java_encoder_order() -> None:
    message = Message(
        message_type=MessageType.SENDACK,
        token="t",
        flag=2,
        status_phrase="p",
        status_code=7,
        content={"k": "v"},
    )
    raw = codec.encode(message)
    # StatusCode(2), StatusPhrase(3), Flag(4), Token(5), Custom(1), End(0)
    expected = "0203 | 0200 07000000 | 0300 01000000 70 | 0400 02000000 | 0500 01000000 74 |"
    expected += " 0100 01000000 6b 01 01000000 76 | 0000"
    assert raw == bytes.fromhex(expected.replace("|", ""))


def test_failed_truncates_the_reason_to_128_characters_and_keeps_a_null_reason_null() -> None:
    reason = "数据库错误:" + "x" * 300
    decoded = codec.decode(codec.encode(codec.failed(TOKEN, 42, reason)))
    assert decoded.kind == codec.MessageKind.FAILED
    assert decoded.content["msg"] == reason[:128]
    assert len(str(decoded.content["msg"])) == 128
    assert type(decoded.content["id"]) is Int64

    raw = codec.encode(codec.failed(TOKEN, 42, None))
    assert raw.endswith(bytes.fromhex("0100 03000000 6d7367 00 0000"))  # "msg" as Void
    assert codec.decode(raw).content["msg"] is None


def test_push_round_trips_with_plain_and_gzip_content() -> None:
    sent = datetime(2024, 5, 1, 4, 0, 0, 123000, tzinfo=UTC)
    body = '{"tid": 4035489571937834567, "seller_nick": "旗舰店", "payment": "100.00"}'
    for compressed in (False, True):
        message = codec.push(
            TOKEN,
            message_id=2**62 + 5,
            topic="taobao_trade_TradeBuyerPay",
            content=body,
            time=sent,
            outtime=sent + timedelta(seconds=1),
            publisher="12497914",
            user_id=2_200_000_000_123,
            nick="旗舰店",
            gzip_content=compressed,
            retried=2,
        )
        raw = codec.encode(message)
        decoded = codec.decode(raw)
        assert isinstance(decoded.content["content"], bytes if compressed else str)
        event = codec.parse_push(decoded)
        assert event.id == 2**62 + 5
        assert event.topic == "taobao_trade_TradeBuyerPay"
        assert event.content == body
        assert event.time == sent
        assert event.nick == "旗舰店"
        assert event.user_id == 2_200_000_000_123
        assert event.retried == 2


def _push_with(**content: codec.Value) -> Message:
    return Message(message_type=MessageType.SEND, token=TOKEN, content=content)


def test_parse_push_rejects_bad_gzip_and_missing_fields_with_decode_errors() -> None:
    good = gzip.compress(b'{"tid": 1}')
    cases = {
        "not valid gzip": _push_with(id=Int64(1), topic="t", content=b"not gzip at all"),
        "truncated": _push_with(id=Int64(1), topic="t", content=good[:-6]),
        "not UTF-8": _push_with(id=Int64(1), topic="t", content=gzip.compress(b"\xff\xfe")),
        "no integer id": _push_with(id="1", topic="t", content="{}"),
        "no topic": _push_with(id=Int64(1), content="{}"),
        "unexpected type": _push_with(id=Int64(1), topic="t", content=Int32(5)),
    }
    for expected, message in cases.items():
        with pytest.raises(TmcDecodeError, match=expected):
            codec.parse_push(message)


def test_gzip_content_that_inflates_beyond_the_limit_is_refused() -> None:
    bomb = gzip.compress(b"\0" * (codec.MAX_INFLATED_CONTENT + 1))
    with pytest.raises(TmcDecodeError, match="inflates beyond"):
        codec.parse_push(_push_with(id=Int64(1), topic="t", content=bomb))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", "truncated: message preamble needs 2 bytes at offset 0, 0 left"),
        (b"\x02", "truncated: message preamble"),
        (b"\x01\x02\x00\x00", "unsupported protocol version 1"),
        (b"\x02\x09\x00\x00", "unknown message type 9"),
        (b"\x02\x02", "truncated: header type needs 2 bytes at offset 2, 0 left"),
        (b"\x02\x02\x02\x00\x01\x00", "truncated: StatusCode needs 4 bytes at offset 4, 2 left"),
        (b"\x02\x02\x07\x00\x00\x00", "unknown header type 7 at offset 2"),
        (b"\x02\x02\xff\xff\x00\x00", "unknown header type -1 at offset 2"),
        (b"\x02\x02\x05\x00\xfe\xff\xff\xff\x00\x00", "negative length -2 for Token at offset 4"),
        (b"\x02\x02\x05\x00\x10\x00\x00\x00abc", "truncated: Token needs 16 bytes at offset 8, 3 left"),
        (b"\x02\x02\x05\x00\x02\x00\x00\x00\xc3\x28\x00\x00", "invalid UTF-8 in Token at offset 8"),
        (b"\x02\x02\x01\x00\x01\x00\x00\x00k", "truncated: value format of 'k'"),
        (b"\x02\x02\x01\x00\x01\x00\x00\x00k\x05\x01\x02", "truncated: value of 'k' needs 8 bytes"),
        (b"\x02\x02\x01\x00\x01\x00\x00\x00k\x07\xff\xff\xff\xff", "negative length -1 for ByteArray"),
        (b"\x02\x02\x01\x00\x01\x00\x00\x00k\x06" + b"\xff" * 7 + b"\x7f\x00\x00", "outside the"),
        (b"\x02\x02\x01\x00\x02\x00\x00\x00\xff\xff\x00\x00\x00\x00", "invalid UTF-8 in content key"),
    ],
)
def test_malformed_input_raises_a_precise_decode_error(raw: bytes, expected: str) -> None:
    with pytest.raises(TmcDecodeError, match=expected.replace("(", r"\(")) as caught:
        codec.decode(raw)
    assert isinstance(caught.value, OrderSyncError)


def test_an_unknown_value_format_is_read_as_a_counted_string() -> None:
    raw = b"\x02\x02\x01\x00\x01\x00\x00\x00k\x63\x02\x00\x00\x00hi\x00\x00"
    assert codec.decode(raw).content == {"k": "hi"}


def test_bytes_after_end_of_headers_are_ignored_like_top_link_does() -> None:
    assert codec.decode(CONNECTACK_VECTOR + b"\x99\x98").token == TOKEN


def test_every_value_format_round_trips_with_its_width() -> None:
    content: dict[str, codec.Value] = {
        "void": None,
        "text": "文字",
        "empty": "",
        "byte": Byte(-128),
        "int16": Int16(-32768),
        "int32": Int32(2**31 - 1),
        "int64": Int64(-(2**63)),
        "bytes": b"\x00\xff",
        "date": datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
    }
    raw = codec.encode(Message(message_type=MessageType.SEND, content=content))
    decoded = codec.decode(raw)
    assert decoded.content == content
    assert [type(v) for v in decoded.content.values()] == [type(v) for v in content.values()]
    assert codec.encode(decoded) == raw
    assert raw[-10:-2] == (-1).to_bytes(8, "little", signed=True)  # Date: epoch ms, signed


def test_dates_are_epoch_milliseconds_in_any_timezone() -> None:
    gmt8 = timezone(timedelta(hours=8))
    local = datetime(2024, 5, 1, 12, 0, 0, tzinfo=gmt8)
    raw = codec.encode(Message(message_type=MessageType.SEND, content={"time": local}))
    assert int.from_bytes(raw[-10:-2], "little") == 1714536000000
    assert codec.decode(raw).content["time"] == local


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5, "plain int; use Byte, Int16, Int32 or Int64"),
        (True, "plain bool"),
        (datetime(2024, 1, 1), "naive datetime"),  # naive on purpose
        (3.5, "unsupported type float"),
        ("\ud800", "not encodable as UTF-8"),
    ],
)
def test_values_that_cannot_be_encoded_raise_encode_errors(value: object, expected: str) -> None:
    message = Message(message_type=MessageType.SEND, content={"k": value})  # type: ignore[dict-item]
    with pytest.raises(TmcEncodeError, match=expected):
        codec.encode(message)


def test_typed_ints_check_their_range() -> None:
    with pytest.raises(TmcEncodeError, match="does not fit in a signed 8-bit Byte"):
        Byte(128)
    with pytest.raises(TmcEncodeError, match="64-bit"):
        Int64(2**63)
    with pytest.raises(TmcEncodeError, match="StatusCode 2147483648 does not fit"):
        codec.encode(Message(message_type=MessageType.SENDACK, status_code=2**31))
    assert repr(Int64(7)) == "Int64(7)"
    assert Int64(7) == 7


def test_the_token_stays_out_of_the_message_repr() -> None:
    assert TOKEN not in repr(codec.pull_request(TOKEN))
