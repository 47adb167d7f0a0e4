"""Property tests of the TOP response parser, envelope to models: whatever a body holds, the only
exceptions out are the taxonomy's (docs/design.md#bad-input-never-crashes), and a list page that
promises more than it holds never comes out as a page (docs/design.md#lists-are-checked-before-proof)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taobao.answers import page_problem, parse_trade, parse_trade_page
from taobao.envelope import parse_response
from taobao.errors import MalformedPage, MalformedResponse, TopError
from taobao.fields import TRADE_FULLINFO_GET, TRADES_SOLD_INCREMENT_GET
from taobao.models import TradePage

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TID = 4_012_345_678_901_234_567

# What real answers carry that a careful parser still trips over.
ODD_SCALARS = st.sampled_from(
    [
        "N/A", "1E-20000", "1E+20000", "NaN", "-Infinity", "0001-01-01 00:00:00", "9999-12-31 23:59:59",
        "2024-02-30 10:00:00", "", " ", "\x00", "\ud800", "9" * 5000, "true", "maybe", "-1",
        str(2**63), str(-(2**63)),
    ]
)  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    ODD_SCALARS,
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
TRADE_KEYS = [
    "tid", "modified", "created", "pay_time", "payment", "total_fee", "post_fee", "status", "type",
    "buyer_nick", "seller_nick", "orders",
]  # fmt: skip
ORDER = st.dictionaries(
    st.sampled_from(["oid", "price", "payment", "num", "end_time", "title"]), SCALARS | JSON, max_size=6
)
ORDERS = st.one_of(
    st.lists(ORDER, max_size=3), st.fixed_dictionaries({"order": st.lists(ORDER, max_size=3)}), JSON
)
TRADE = st.fixed_dictionaries(
    {"tid": st.just(TID) | SCALARS},
    optional={k: (ORDERS if k == "orders" else SCALARS) for k in TRADE_KEYS if k != "tid"},
)
PAGE = st.fixed_dictionaries(
    {},
    optional={
        "trades": st.one_of(
            st.fixed_dictionaries({"trade": st.lists(TRADE | JSON, max_size=6)}),
            st.lists(TRADE, max_size=6),
            JSON,
        ),
        "total_results": SCALARS,
        "has_next": SCALARS,
        "request_id": SCALARS,
    },
)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_nothing_but_top_errors(body: bytes) -> None:
    with contextlib.suppress(TopError):
        parse_response(body, TRADE_FULLINFO_GET, tid=TID)


@FUZZ
@given(TRADE, st.sampled_from([0, 50, 5000]))
def test_a_fullinfo_answer_gives_a_trade_or_a_malformed_response(trade: dict[str, Any], depth: int) -> None:
    document = json.dumps({"trade_fullinfo_get_response": {"trade": trade}}, default=str)
    if depth:
        document = document[:-2] + f', "extra": {_nested(depth)}' + "}}"
    failure: TopError | None = None
    try:
        payload = parse_response(document.encode("utf-8", "surrogatepass"), TRADE_FULLINFO_GET, tid=TID)
        assert parse_trade(payload, TID).tid == TID
    except TopError as exc:
        failure = exc
    if isinstance(failure, MalformedResponse):
        assert failure.tid == TID  # one trade's content: its own failure, never the process's


@FUZZ
@given(PAGE, st.integers(1, 5), st.sampled_from([1, 3, 100]), st.booleans())
def test_a_list_answer_gives_a_page_that_adds_up_or_a_malformed_page(
    page: dict[str, Any], page_no: int, page_size: int, use_has_next: bool
) -> None:
    document = json.dumps({"trades_sold_increment_get_response": page}, default=str)
    try:
        payload = parse_response(document.encode("utf-8", "surrogatepass"), TRADES_SOLD_INCREMENT_GET)
        parsed = parse_trade_page(
            payload,
            method=TRADES_SOLD_INCREMENT_GET,
            page_no=page_no,
            page_size=page_size,
            use_has_next=use_has_next,
        )
    except TopError:
        return
    assert page_problem(parsed, page_no=page_no, page_size=page_size, use_has_next=use_has_next) is None


def _page(count: int, **fields: Any) -> dict[str, Any]:
    return {"trades": {"trade": [{"tid": TID - i} for i in range(count)]}, **fields}


@pytest.mark.parametrize(
    ("payload", "page_no", "use_has_next"),
    [
        pytest.param(_page(3), 1, False, id="missing-count"),
        pytest.param(_page(3), 2, True, id="missing-has-next"),
        pytest.param(_page(3, has_next="maybe"), 2, True, id="garbled-has-next"),
        pytest.param(_page(3, total_results="many"), 1, False, id="garbled-count"),
        pytest.param(_page(2, total_results=250), 1, False, id="short-first-page"),
        pytest.param(_page(0, total_results=250), 1, False, id="empty-first-page"),
        pytest.param(_page(60, has_next=True), 2, True, id="short-page-promising-more"),
        pytest.param(_page(0, has_next=True), 3, True, id="empty-page-promising-more"),
        pytest.param({"trades": 7, "total_results": 1}, 1, False, id="trades-not-a-list"),
    ],
)
def test_pages_that_do_not_add_up_are_malformed(
    payload: dict[str, Any], page_no: int, use_has_next: bool
) -> None:
    with pytest.raises(MalformedPage):
        parse_trade_page(
            payload,
            method=TRADES_SOLD_INCREMENT_GET,
            page_no=page_no,
            page_size=100,
            use_has_next=use_has_next,
        )


@pytest.mark.parametrize(
    ("payload", "page_no", "use_has_next", "tids"),
    [
        pytest.param({}, 1, False, 0, id="empty-window-without-count"),
        pytest.param(_page(0, total_results=0), 1, False, 0, id="empty-window"),
        pytest.param(_page(100, total_results=250), 1, False, 100, id="full-first-page"),
        pytest.param(_page(50, total_results=250), 3, False, 50, id="last-page-by-count"),
        pytest.param(_page(100, has_next=True), 2, True, 100, id="full-page-promising-more"),
        pytest.param(_page(7, has_next=False), 3, True, 7, id="short-last-page"),
        pytest.param(_page(0, has_next=False), 3, True, 0, id="emptied-last-page"),
    ],
)
def test_pages_that_add_up_are_read(
    payload: dict[str, Any], page_no: int, use_has_next: bool, tids: int
) -> None:
    page = parse_trade_page(
        payload, method=TRADES_SOLD_INCREMENT_GET, page_no=page_no, page_size=100, use_has_next=use_has_next
    )
    assert isinstance(page, TradePage)
    assert len(page.trades) == tids


def test_an_entry_that_fails_validation_still_counts_for_the_page() -> None:
    payload = _page(99, total_results=100)
    payload["trades"]["trade"].append({"tid": TID + 1, "payment": "N/A"})
    page = parse_trade_page(
        payload, method=TRADES_SOLD_INCREMENT_GET, page_no=1, page_size=100, use_has_next=False
    )
    assert len(page.trades) == 99
    assert [r.raw["tid"] for r in page.rejected] == [TID + 1]


@pytest.mark.parametrize(
    "trade",
    [
        pytest.param({"tid": TID, "payment": "N/A"}, id="money-not-a-number"),
        pytest.param({"tid": TID, "orders": 5}, id="orders-not-a-list"),
        pytest.param({"tid": "x"}, id="tid-not-a-number"),
        pytest.param({"tid": TID + 1}, id="another-trade"),
    ],
)
def test_one_trades_broken_content_is_that_trades_failure(trade: dict[str, Any]) -> None:
    with pytest.raises(MalformedResponse) as caught:
        parse_trade({"trade": trade}, TID)
    assert caught.value.tid == TID
    assert caught.value.payload


def test_json_nested_past_the_parser_is_a_per_trade_failure_for_fullinfo_and_garbled_otherwise() -> None:
    body = f'{{"trade_fullinfo_get_response": {{"trade": {{"tid": {TID}, "x": {_nested(100_000)}}}}}}}'
    with pytest.raises(MalformedResponse) as caught:
        parse_response(body, TRADE_FULLINFO_GET, tid=TID)
    assert caught.value.tid == TID
    with pytest.raises(TopError) as garbled:
        parse_response(body, TRADES_SOLD_INCREMENT_GET)
    assert not isinstance(garbled.value, MalformedResponse)  # a list's window is read again later
