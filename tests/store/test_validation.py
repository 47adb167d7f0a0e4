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
        ({**trade_json(1, 0), "seller_memo": "a\x00b"}, "NUL"),
        ({**trade_json(1, 0), "seller_nick": "a\x00b"}, "NUL"),
        ({**trade_json(1, 0), "seller_memo": "\ud800"}, "surrogate"),
        ({**trade_json(1, 0), "score": float("nan")}, "not storable JSON"),
        ({**trade_json(1, 0), "payment": "1000000000000.00"}, "payment"),
        ({**trade_json(1, 0), "orders": [{"oid": 5}, {"oid": 5}]}, "appears twice"),
        ({**trade_json(1, 0), "orders": [{"oid": 5, "num": 2**31}]}, "num"),
        ({**trade_json(1, 0), "orders": [{"oid": 5, "price": "99999999999999.00"}]}, "price"),
    ],
)
def test_unstorable_trades_are_refused_with_a_reason(data: dict[str, object], reason: str) -> None:
    trade = Trade.model_validate(data)
    with pytest.raises(InvalidTradeError, match=reason) as info:
        check_trade(trade)
    assert info.value.tid == 1


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
    assert [(r.tid, r.shop) for r in rejected] == [(7, "shop\\x00x")]
    assert json.loads(rejected[0].payload) == {"tid": 7, "seller_nick": "shop\x00x"}


def test_storable_text_escapes_what_postgres_refuses() -> None:
    assert storable_text("a\x00b\ud800") == "a\\x00b\\ud800"
