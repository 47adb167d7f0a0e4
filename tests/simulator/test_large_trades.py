"""The stand-in's trade-size knob (`StandInConfig.trade_text_bytes`): fullinfo answers of about that
size, read by the service's own TOP client over a real socket."""

from __future__ import annotations

from simulator.standin import StandIn, StandInConfig
from simulator.tradegen import long_buyer_message
from tests.reconciler.conftest import top_client

MIB = 1024 * 1024


def test_a_long_buyer_message_has_the_size_asked_in_utf8() -> None:
    text = long_buyer_message(MIB)
    assert MIB - 3 <= len(text.encode()) <= MIB
    assert any("\u4e00" <= char <= "\u9fff" for char in text[:100])  # Chinese, as buyers write


async def test_every_trade_carries_the_long_message_and_fullinfo_answers_with_it() -> None:
    standin = StandIn(StandInConfig(seed=5, shops=1, market_rate=0, history_trades=5, trade_text_bytes=MIB))
    await standin.start()
    try:
        records = list(standin.market.records(0))
        assert len(records) == 5
        async with top_client(standin) as client:
            trade = await client.trade_fullinfo(standin.shops[0].session, records[0].tid)
        message = trade.raw["buyer_message"]
        assert message == long_buyer_message(MIB)
        assert trade.raw["has_buyer_message"] is True
        # One text shared by every trade: the stand-in's memory does not grow with the knob.
        shared = [raw["buyer_message"] for r in records if (raw := standin.market.trade(r.tid)) is not None]
        assert len(shared) == len(records)
        assert all(text is shared[0] for text in shared)
    finally:
        await standin.stop()
