"""Response shapes of docs/top-api.md#http-request, docs/top-api.md#response-envelope,
docs/top-api.md#error-envelope."""

from __future__ import annotations

import json

import pytest

from taobao.envelope import decode_body, parse_response, response_key, unwrap_response
from taobao.errors import (
    AppWideTopError,
    RateLimited,
    RetryableTopError,
    SessionExpired,
    TradeNotFound,
)
from taobao.models import TradePage


@pytest.mark.parametrize(
    ("method", "key"),
    [
        ("taobao.trades.sold.get", "trades_sold_get_response"),
        ("taobao.trades.sold.increment.get", "trades_sold_increment_get_response"),
        ("taobao.trade.fullinfo.get", "trade_fullinfo_get_response"),
        ("taobao.topats.result.get", "topats_result_get_response"),
        ("alibaba.aliqin.fc.sms.num.send", "alibaba_aliqin_fc_sms_num_send_response"),
    ],
)
def test_response_key(method: str, key: str) -> None:
    assert response_key(method) == key


def test_control_characters_inside_strings_are_accepted() -> None:
    body = '{"trade_fullinfo_get_response":{"trade":{"tid":1,"buyer_message":"line1\nline2\ttab\rcr"}}}'
    payload = parse_response(body.encode(), "taobao.trade.fullinfo.get")
    assert payload["trade"]["buyer_message"] == "line1\nline2\ttab\rcr"


def test_utf8_bom_and_chinese_text() -> None:
    body = '\ufeff{"trade_fullinfo_get_response":{"trade":{"tid":1,"seller_memo":"尽快发货"}}}'.encode()
    assert parse_response(body, "taobao.trade.fullinfo.get")["trade"]["seller_memo"] == "尽快发货"


def test_invalid_utf8_is_replaced_not_retried() -> None:
    body = b'{"trade_fullinfo_get_response":{"trade":{"tid":1,"seller_memo":"a\xffb"}}}'
    assert parse_response(body, "taobao.trade.fullinfo.get")["trade"]["seller_memo"] == "a\ufffdb"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<?xml version='1.0'?><error_response/>",
        b'{"trades_sold_get_response": {"total_results": 1',
        b"[1, 2]",
        b'"x"',
    ],
)
def test_garbled_bodies_are_retryable(body: bytes) -> None:
    with pytest.raises(RetryableTopError, match="garbled body"):
        decode_body(body, method="taobao.trades.sold.get")


def test_nineteen_digit_ids_survive_decoding() -> None:
    body = b'{"trade_fullinfo_get_response":{"trade":{"tid":2899536456494937165}}}'
    assert parse_response(body, "taobao.trade.fullinfo.get")["trade"]["tid"] == 2899536456494937165


def test_error_response_with_sub_code() -> None:
    body = json.dumps(
        {
            "error_response": {
                "code": 15,
                "msg": "Remote service error",
                "sub_code": "isv.trade-not-exist",
                "sub_msg": "交易订单不存在",
                "request_id": "16kksr4el1bs0",
            }
        }
    )
    with pytest.raises(TradeNotFound) as caught:
        parse_response(body, "taobao.trade.fullinfo.get", tid=42)
    assert caught.value.tid == 42
    assert caught.value.request_id == "16kksr4el1bs0"


def test_error_response_without_sub_code() -> None:
    body = b'{"error_response":{"code":25,"msg":"Invalid signature","request_id":"109wcmcgllsj1"}}'
    with pytest.raises(AppWideTopError) as caught:
        parse_response(body, "taobao.trades.sold.get")
    assert (caught.value.code, caught.value.sub_code, caught.value.msg) == (25, None, "Invalid signature")


def test_error_response_in_a_simplified_reply_and_a_ban() -> None:
    body = (
        b'{"error_response":{"code":7,"msg":"App Call Limited","sub_code":'
        b'"accesscontrol.limited-by-api-access-count","sub_msg":"This ban will last for 2 more seconds"}}'
    )
    with pytest.raises(RateLimited) as caught:
        parse_response(body, "taobao.trades.sold.increment.get")
    assert caught.value.ban_seconds == 2


def test_session_error() -> None:
    body = b'{"error_response":{"code":27,"msg":"Invalid session","sub_code":"invalid-sessionkey"}}'
    with pytest.raises(SessionExpired):
        parse_response(body, "taobao.trade.fullinfo.get")


def test_error_response_that_is_not_an_object_is_garbled() -> None:
    with pytest.raises(RetryableTopError):
        unwrap_response({"error_response": "oops"}, "taobao.trades.sold.get")


def test_double_wrapped_page() -> None:
    body = json.dumps(
        {
            "trades_sold_get_response": {
                "total_results": 2,
                "trades": {"trade": [{"tid": 2899536456494937165}, {"tid": "2899536456494937166"}]},
                "request_id": "ej6ptuzf712n",
            }
        }
    )
    page = TradePage.from_payload(parse_response(body, "taobao.trades.sold.get"))
    assert [t.tid for t in page.trades] == [2899536456494937165, 2899536456494937166]
    assert page.total_results == 2
    assert page.has_next is None
    assert page.request_id == "ej6ptuzf712n"


def test_empty_window_with_has_next_only() -> None:
    body = b'{"trades_sold_increment_get_response":{"has_next":false,"request_id":"abc"}}'
    page = TradePage.from_payload(parse_response(body, "taobao.trades.sold.increment.get"))
    assert page.trades == []
    assert page.has_next is False
    assert page.total_results is None


def test_a_body_without_a_wrapper_is_app_wide_never_an_empty_page() -> None:
    # The client never asks for simplified JSON: a 200 answer without the wrapper is a proxy's.
    for body in (
        b'{"total_results":"1","has_next":"true","trades":[{"tid":7,"orders":[{"oid":8}]}]}',
        b'{"status":"ok"}',
        b"{}",
    ):
        with pytest.raises(AppWideTopError):
            parse_response(body, "taobao.trades.sold.get")


def test_an_html_page_with_status_200_is_app_wide() -> None:
    with pytest.raises(AppWideTopError):
        parse_response(b"\n <html><body>Please log in to the network</body></html>", "taobao.trades.sold.get")


def test_single_trade_not_in_a_list() -> None:
    body = b'{"trades_sold_get_response":{"total_results":1,"trades":{"trade":{"tid":5}}}}'
    page = TradePage.from_payload(parse_response(body, "taobao.trades.sold.get"))
    assert [t.tid for t in page.trades] == [5]


def test_invalid_entries_are_rejected_not_fatal() -> None:
    body = b'{"trades_sold_get_response":{"trades":{"trade":[{"tid":1},{"tid":"x"},{"no_tid":true}]}}}'
    page = TradePage.from_payload(parse_response(body, "taobao.trades.sold.get"))
    assert [t.tid for t in page.trades] == [1]
    assert [r.raw for r in page.rejected] == [{"tid": "x"}, {"no_tid": True}]
    assert all("validation error" in r.reason for r in page.rejected)


def test_unexpected_root_name_is_taken_like_the_java_sdk() -> None:
    body = b'{"one_response":{"x":1},"other_response":{"total_results":3}}'
    # Two candidates and none matching: not an answer to this call.
    with pytest.raises(AppWideTopError):
        parse_response(body, "taobao.trades.sold.get")
    body = b'{"trade_get_response":{"trade":{"tid":1}}}'
    assert parse_response(body, "taobao.trade.fullinfo.get") == {"trade": {"tid": 1}}
