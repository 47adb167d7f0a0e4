"""The ERP contract text shows the query the code runs, and that query works as written."""

from __future__ import annotations

import re

from store.contract import erp_contract_markdown
from store.feed import read_changes
from store.pg import PgStore
from tests.store.factory import fresh_tids, make_trade


def _documented_feed_query() -> str:
    match = re.search(r"```sql\n(.*?)```", erp_contract_markdown(), re.DOTALL)
    assert match is not None
    return match.group(1)


async def test_the_documented_query_returns_what_read_changes_returns(store: PgStore) -> None:
    start = await store.last_position()
    await store.apply_trades([make_trade(t, 0) for t in fresh_tids(3)], source="stream")
    query = _documented_feed_query().replace("$cursor", "$1").replace("$limit", "$2")
    rows = await store.pool.fetch(query, start, 2)
    changes = await read_changes(store.pool, start, 2)
    assert [row["position"] for row in rows] == [c.position for c in changes] == [start + 1, start + 2]


def test_the_contract_names_the_channel_and_the_payload_fields() -> None:
    text = erp_contract_markdown()
    assert "LISTEN trade_changed" in text
    for field in ("position", "tid", "seller_nick", "status", "modified", "source"):
        assert f'"{field}"' in text
