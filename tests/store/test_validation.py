"""Pure checks before the database: what gets quarantined, and which duplicate wins."""

from __future__ import annotations

import json

import pytest

from store.errors import InvalidTradeError
from store.validation import canonical_json, check_trade, prepare_batch, prepare_trade, storable_text
from taobao.models import Trade
from tests.store.factory import make_trade, trade_json


def test_canonical_json_ignores_key_order_and_keeps_unicode() -> None:
    a = canonical_json({"b": 1, "a": "店铺"})
    b = canonical_json({"a": "店铺", "b": 1})
    assert a == b == '{"a":"店铺","b":1}'


def test_equal_content_gives_equal_hash_and_any_difference_changes_it() -> None:
    one = prepare_trade(make_trade(1, 0))
    again = prepare_trade(Trade.model_validate(json.loads(json.dumps(trade_json(1, 0)))))
    memo = prepare_trade(make_trade(1, 0, note="memo"))
    assert one.content_hash == again.content_hash
    assert one.content_hash != memo.content_hash


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"tid": 1, "seller_nick": "s"}, "no `modified`"),
        ({**trade_json(1, 0), "modified": "0001-01-01 00:00:00"}, "`modified`"),
        ({**trade_json(1, 0), "score": float("nan")}, "not storable JSON"),
        ({**trade_json(1, 0), "orders": [{"oid": 5}, {"oid": 5}]}, "appears twice"),
    ],
)
def test_unstorable_trades_are_refused_with_a_reason(data: dict[str, object], reason: str) -> None:
    trade = Trade.model_validate(data)
    with pytest.raises(InvalidTradeError, match=reason) as info:
        check_trade(trade)
    assert info.value.tid == 1


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({**trade_json(1, 0), "seller_memo": "a\x00b"}, "seller_memo"),
        ({**trade_json(1, 0), "seller_nick": "a\x00b"}, "seller_nick"),
        ({**trade_json(1, 0), "seller_memo": "\ud800"}, "seller_memo"),
        ({**trade_json(1, 0), "orders": [{"oid": 5, "title": "x\x00\udc00"}]}, "orders"),
        ({**trade_json(1, 0), "x\x00": "key"}, "x\ufffd"),
    ],
)
def test_nul_and_lone_surrogates_are_stored_as_u_fffd_and_the_original_kept(
    data: dict[str, object], field: str
) -> None:
    prepared = prepare_trade(Trade.model_validate(data))
    assert prepared.replaced
    assert prepared.flaws == ()
    stored = json.loads(prepared.raw_json)
    assert field in stored
    assert "\x00" not in prepared.raw_json
    assert "\\u0000" not in prepared.raw_json
    prepared.raw_json.encode("utf-8")  # no lone surrogate left
    assert "\ufffd" in prepared.raw_json
    if field == "seller_nick":
        assert prepared.trade.seller_nick == "a\ufffdb"
    if field == "orders":
        assert prepared.trade.orders[0].title == "x\ufffd\ufffd"
    # The original, as received (surrogates as ASCII escapes), for the dead-letter row.
    assert (
        b"\\u0000" in prepared.original or b"\\ud800" in prepared.original or b"\\udc00" in prepared.original
    )


@pytest.mark.parametrize(
    ("data", "emptied"),
    [
        ({**trade_json(1, 0), "end_time": "0001-01-01 00:00:00"}, "end_time"),
        ({**trade_json(1, 0), "post_fee": "1E-20000"}, "post_fee"),
        ({**trade_json(1, 0), "payment": "1000000000000.00"}, "payment"),
    ],
)
def test_an_out_of_range_optional_field_is_emptied_and_the_trade_flagged(
    data: dict[str, object], emptied: str
) -> None:
    prepared = prepare_trade(Trade.model_validate(data))
    assert getattr(prepared.trade, emptied) is None
    assert [emptied in flaw for flaw in prepared.flaws] == [True]
    # `raw` keeps the answer as it came: the redrive reads the trade again until it stores whole.
    assert json.loads(prepared.raw_json)[emptied] == data[emptied]
    assert json.loads(prepared.original)[emptied] == data[emptied]


@pytest.mark.parametrize(
    ("order", "emptied"),
    [({"oid": 5, "num": 2**31}, "num"), ({"oid": 5, "price": "99999999999999.00"}, "price")],
)
def test_an_out_of_range_order_field_is_emptied_too(order: dict[str, object], emptied: str) -> None:
    prepared = prepare_trade(Trade.model_validate({**trade_json(1, 0), "orders": [order]}))
    assert getattr(prepared.trade.orders[0], emptied) is None
    assert len(prepared.flaws) == 1


def test_a_clean_trade_is_neither_replaced_nor_flawed() -> None:
    prepared = prepare_trade(make_trade(1, 0, note="店铺"))
    assert (prepared.replaced, prepared.flaws, prepared.original) == (False, (), b"")


def test_the_largest_storable_amount_passes() -> None:
    check_trade(Trade.model_validate({**trade_json(1, 0), "payment": "999999999999.99", "post_fee": "-5.00"}))


def test_an_escaped_backslash_before_u0000_is_not_a_nul() -> None:
    check_trade(Trade.model_validate({**trade_json(1, 0), "seller_memo": "C:\\u0000"}))


def test_batch_keeps_the_newest_version_of_each_tid_and_sorts_by_tid() -> None:
    batch = [make_trade(2, 5), make_trade(1, 3, status="A"), make_trade(1, 9, status="B"), make_trade(1, 4)]
    prepared, rejected = prepare_batch(batch)
    assert rejected == []
    assert [(p.trade.tid, p.trade.status) for p in prepared] == [(1, "B"), (2, "WAIT_BUYER_PAY")]


def test_on_equal_modified_the_later_one_in_the_batch_wins() -> None:
    prepared, _ = prepare_batch([make_trade(1, 3, status="first"), make_trade(1, 3, status="second")])
    assert [p.trade.status for p in prepared] == ["second"]


def test_a_bad_trade_is_set_aside_and_the_rest_kept() -> None:
    bad = Trade.model_validate({"tid": 7, "seller_nick": "shop\x00x"})
    prepared, rejected = prepare_batch([make_trade(1, 0), bad])
    assert [p.trade.tid for p in prepared] == [1]
    assert [(r.tid, r.shop, r.kind, r.modified) for r in rejected] == [
        (7, "shop\\x00x", "invalid_trade", None)
    ]
    assert json.loads(rejected[0].payload) == {"tid": 7, "seller_nick": "shop\x00x"}


def test_storable_text_escapes_what_postgres_refuses() -> None:
    assert storable_text("a\x00b\ud800") == "a\\x00b\\ud800"
