"""TOP JSON → Trade / TopatsTask (docs/top-api.md#value-formats): int64 ids, GMT+8 times, Decimal money, raw
kept."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from taobao.envelope import parse_response
from taobao.models import TopatsTask, Trade

FULLINFO = """{"trade_fullinfo_get_response":{"trade":{
  "tid":2899536456494937165,"tid_str":"2899536456494937165","status":"WAIT_SELLER_SEND_GOODS",
  "type":"fixed","seller_nick":"店铺","buyer_open_uid":"AAH","created":"2024-05-01 12:00:00",
  "modified":"2024-05-01 12:30:05","pay_time":"2024-05-01 12:01:00","payment":"200.07",
  "total_fee":"199.00","post_fee":"1.07","buyer_message":"请\t尽快","promotion_details":
  {"promotion_detail":[{"id":1,"promotion_name":"满减"}]},"a_field_nobody_names":{"x":[1,2]},
  "orders":{"order":[{"oid":2899536456494937166,"status":"WAIT_SELLER_SEND_GOODS","num":1,
  "num_iid":600000000001,"price":"199.00","payment":"199.00","refund_status":"NO_REFUND",
  "end_time":"2024-05-02 00:00:00","consign_time":"2024-05-02 00:00:00"}]}}}}"""


def _trade() -> Trade:
    return Trade.model_validate(parse_response(FULLINFO, "taobao.trade.fullinfo.get")["trade"])


def test_ids_are_exact_int64() -> None:
    trade = _trade()
    assert trade.tid == 2899536456494937165
    assert trade.orders[0].oid == 2899536456494937166
    assert trade.orders[0].num_iid == 600000000001


def test_ids_as_strings_are_accepted() -> None:
    trade = Trade.model_validate({"tid": "2899536456494937165", "orders": [{"oid": " 2899536456494937166 "}]})
    assert trade.tid == 2899536456494937165
    assert trade.orders[0].oid == 2899536456494937166


@pytest.mark.parametrize("tid", [2.899536456494937e18, True, -1, 2**63, "abc"])
def test_bad_ids_are_refused(tid: object) -> None:
    with pytest.raises(ValidationError):
        Trade.model_validate({"tid": tid})


def test_times_are_aware_gmt8() -> None:
    trade = _trade()
    assert trade.modified == datetime(2024, 5, 1, 4, 30, 5, tzinfo=UTC)
    assert trade.modified is not None
    assert trade.modified.utcoffset() is not None
    assert trade.orders[0].end_time == datetime(2024, 5, 1, 16, 0, tzinfo=UTC)


def test_money_is_exact_decimal() -> None:
    trade = _trade()
    assert trade.payment == Decimal("200.07")
    assert trade.orders[0].price == Decimal("199.00")
    with pytest.raises(ValidationError):
        Trade.model_validate({"tid": 1, "payment": 200.07})


def test_unknown_fields_stay_in_raw() -> None:
    trade = _trade()
    assert trade.raw["a_field_nobody_names"] == {"x": [1, 2]}
    assert trade.raw["promotion_details"] == {"promotion_detail": [{"id": 1, "promotion_name": "满减"}]}
    assert trade.raw["buyer_message"] == "请\t尽快"
    assert trade.raw["orders"]["order"][0]["consign_time"] == "2024-05-02 00:00:00"
    # raw round-trips to JSON for the jsonb column
    assert json.loads(json.dumps(trade.raw))["tid"] == 2899536456494937165
    assert "raw" not in repr(trade)


@pytest.mark.parametrize(
    "orders",
    [None, {"order": []}, {}, []],
)
def test_omitted_or_empty_orders(orders: object) -> None:
    data: dict[str, object] = {"tid": 1}
    if orders is not None:
        data["orders"] = orders
    assert Trade.model_validate(data).orders == []


def test_simplified_orders_list() -> None:
    trade = Trade.model_validate({"tid": 1, "orders": [{"oid": 2}, {"oid": 3}]})
    assert [o.oid for o in trade.orders] == [2, 3]


def test_topats_task() -> None:
    task = TopatsTask.model_validate(
        {
            "task_id": "123456",
            "status": "done",
            "created": "2012-05-01 10:00:00",
            "download_url": "http://example.invalid/file?token=t0k3n",
            "check_code": "ABC",
            "method": "taobao.topats.trades.sold.get",
        }
    )
    assert task.task_id == 123456
    assert task.done
    assert task.raw["check_code"] == "ABC"
    assert "t0k3n" not in repr(task)
    assert not TopatsTask.model_validate({"task_id": 1, "status": "doing"}).done
