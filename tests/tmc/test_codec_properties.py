"""Property tests of the TMC codec: every message round-trips, and no input raises anything but
TmcDecodeError (docs/design.md#bad-input-never-crashes starts here)."""

from __future__ import annotations

import contextlib
import gzip
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.text import sanitize
from taobao.tmc import codec
from taobao.tmc.codec import Byte, Int16, Int32, Int64, Message, MessageType, TmcDecodeError

INT32 = st.integers(-(2**31), 2**31 - 1)
DATES = st.datetimes(
    min_value=datetime(1, 1, 2),  # bounds are naive; values get UTC
    max_value=datetime(9999, 12, 30),
    timezones=st.just(UTC),
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))  # the wire carries milliseconds

VALUES: st.SearchStrategy[codec.Value] = st.one_of(
    st.none(),
    st.text(),
    st.binary(max_size=64),
    st.integers(-(2**7), 2**7 - 1).map(Byte),
    st.integers(-(2**15), 2**15 - 1).map(Int16),
    INT32.map(Int32),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    DATES,
)

MESSAGES = st.builds(
    Message,
    message_type=st.sampled_from(MessageType),
    status_code=st.none() | INT32,
    status_phrase=st.none() | st.text(max_size=20),
    flag=st.none() | INT32,
    token=st.none() | st.text(max_size=40),
    content=st.dictionaries(st.text(max_size=12), VALUES, max_size=8),
)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decode_or_reject(raw: bytes) -> Message | None:
    """Decode `raw`; the only acceptable failure is TmcDecodeError (anything else fails the test)."""
    try:
        message = codec.decode(raw)
    except TmcDecodeError:
        return None
    with contextlib.suppress(TmcDecodeError):
        codec.parse_push(message)
    return message


@settings(deadline=None)
@given(MESSAGES)
def test_every_message_round_trips_with_its_value_widths(message: Message) -> None:
    raw = codec.encode(message)
    decoded = codec.decode(raw)

    assert decoded == message
    assert [type(v) for v in decoded.content.values()] == [type(v) for v in message.content.values()]
    assert codec.encode(decoded) == raw


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_nothing_but_decode_errors(raw: bytes) -> None:
    _decode_or_reject(raw)


@FUZZ
@given(st.sampled_from([b"\x02\x00", b"\x02\x01", b"\x02\x02", b"\x02\x03"]), st.binary(max_size=300))
def test_bytes_after_a_valid_preamble_raise_nothing_but_decode_errors(preamble: bytes, rest: bytes) -> None:
    _decode_or_reject(preamble + rest)


MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
        st.integers(0, 10_000),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=4,
)


def _mutate(raw: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(raw)
    for op, position, byte in mutations:
        at = position % (len(data) + 1)
        if op == "insert":
            data[at:at] = bytes([byte])
        elif op == "truncate":
            del data[at:]
        elif at < len(data):
            if op == "flip":
                data[at] ^= 1 << (byte % 8)
            elif op == "set":
                data[at] = byte
            else:
                del data[at]
    return bytes(data)


@FUZZ
@given(MESSAGES, MUTATIONS)
def test_mutated_valid_messages_raise_nothing_but_decode_errors(
    message: Message, mutations: list[tuple[str, int, int]]
) -> None:
    _decode_or_reject(_mutate(codec.encode(message), mutations))


PUSHES = st.builds(
    codec.push,
    st.text(min_size=1, max_size=40),
    message_id=st.integers(-(2**63), 2**63 - 1),
    topic=st.text(min_size=1, max_size=30),
    content=st.text(max_size=200),
    time=DATES,
    outtime=DATES,
    publisher=st.text(max_size=10),
    user_id=st.integers(-(2**63), 2**63 - 1),
    nick=st.text(max_size=10),
    gzip_content=st.booleans(),
    retried=st.none() | st.integers(0, 100),
)


@FUZZ
@given(PUSHES, MUTATIONS)
def test_mutated_pushes_raise_nothing_but_decode_errors(
    push: Message, mutations: list[tuple[str, int, int]]
) -> None:
    _decode_or_reject(_mutate(codec.encode(push), mutations))


@settings(deadline=None)
@given(PUSHES)
def test_every_push_parses_back_to_what_was_sent(push: Message) -> None:
    event = codec.parse_push(codec.decode(codec.encode(push)))
    assert event.id == push.content["id"]
    # Topic and nick reach logs and columns: they come through the one sanitizer.
    assert event.topic == sanitize(str(push.content["topic"]))
    body = push.content["content"]
    assert isinstance(body, str | bytes)
    assert event.content == (body if isinstance(body, str) else gzip.decompress(body).decode("utf-8"))
    assert event.time == push.content["time"]
