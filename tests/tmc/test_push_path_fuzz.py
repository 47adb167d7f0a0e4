"""Property tests of the TMC push path, frame bytes to the event the dispatcher routes by: decode, read
the push, read the trade message. Whatever the frame holds, the only exception out is TmcDecodeError
(the frame is dead-lettered); a push that decodes always gives a TradeEvent or a Rejection, and the text
it carries on (topic, nick) has passed the sanitizer (docs/design.md#bad-input-never-crashes)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.text import sanitize
from listener.trade_events import Rejection, TradeEvent, parse_trade_event
from taobao.tmc import codec
from taobao.tmc.codec import TmcDecodeError
from taobao.tmc.events import TmcMessage
from tests.tmc.test_codec_properties import MUTATIONS, _mutate

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
AT = datetime(2024, 5, 1, 4, 0, tzinfo=UTC)
# Frames carry UTF-8, so a lone surrogate can only come as a JSON escape inside the content.
HOSTILE_TEXT = st.sampled_from(["\x00", "a\x00b", "\x1b[2J", "\n" * 3, "é" * 600, ""])
TIDS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.text(max_size=25),
    st.floats(),
    st.booleans(),
    st.none(),
    st.just("4012345678901234567"),
)
CONTENT = st.one_of(
    st.builds(
        lambda tid, nick: json.dumps({"tid": tid, "seller_nick": nick}),
        TIDS,
        HOSTILE_TEXT | st.just("\ud800"),
    ),
    st.integers(1, 200_000).map(lambda depth: '{"tid": 1, "x": ' + "[" * depth + "]" * depth + "}"),
    st.text(max_size=200),
)
TOPICS = st.sampled_from(
    ["taobao_trade_TradeCreate", "taobao_trade_TradeSuccess", "taobao_refund_RefundCreated"]
)


def _frame(topic: str, content: str, nick: str, gzip_content: bool) -> bytes:
    return codec.encode(
        codec.push(
            "token",
            message_id=7,
            topic=topic,
            content=content,
            time=AT,
            outtime=AT,
            publisher="4272",
            user_id=1,
            nick=nick,
            gzip_content=gzip_content,
        )
    )


def _event_or_decode_error(frame: bytes) -> TmcMessage | None:
    """The push path; TmcDecodeError is the one acceptable failure (anything else fails the test)."""
    try:
        message = codec.parse_push(codec.decode(frame))
    except TmcDecodeError:
        return None
    assert isinstance(parse_trade_event(message), TradeEvent | Rejection)
    return message


@FUZZ
@given(
    TOPICS | st.text(min_size=1) | HOSTILE_TEXT.filter(bool), CONTENT, HOSTILE_TEXT | st.text(), st.booleans()
)
def test_every_push_gives_an_event_or_a_rejection_and_carries_only_sanitized_text(
    topic: str, content: str, nick: str, gzip_content: bool
) -> None:
    message = _event_or_decode_error(_frame(topic, content, nick, gzip_content))
    assert message is not None
    assert message.topic == sanitize(topic)
    assert message.nick in (None, sanitize(nick))


@FUZZ
@given(TOPICS, CONTENT, st.booleans(), MUTATIONS)
def test_mutated_pushes_give_an_event_a_rejection_or_a_decode_error(
    topic: str, content: str, gzip_content: bool, mutations: list[tuple[str, int, int]]
) -> None:
    _event_or_decode_error(_mutate(_frame(topic, content, "shop-a", gzip_content), mutations))


def test_a_push_nested_past_the_parser_is_rejected_not_raised() -> None:
    depth = 100_000
    message = _event_or_decode_error(
        _frame("taobao_trade_TradeCreate", '{"tid": 1, "x": ' + "[" * depth + "]" * depth + "}", "s", False)
    )
    assert message is not None
    rejection = parse_trade_event(message)
    assert isinstance(rejection, Rejection)
    assert rejection.kind == "bad_content"
