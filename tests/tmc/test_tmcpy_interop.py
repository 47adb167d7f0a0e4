"""Cross-check the stand-in TMC server against an independent client: PyPI `tmcpy` (0.3.x, tornado).

Skipped unless tmcpy is importable; it is not a project dependency. As published, tmcpy cannot log
in on Python 3: it builds the CONNECT timestamp with `six.binary_type(int)`, i.e. `bytes(1700000000000)`,
which raises MemoryError before anything is sent. With that one call replaced, its handshake, sign,
decoding of our pushes and its confirms all work, which is what this test checks. Its other codec
defects (docs/tmc-protocol.md#codec-pitfalls) do not show here because our message ids exceed 2**32, so it
happens to write them as Int64; with small ids its confirm would be a Byte, which the strict stand-in rejects.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.tmc.helpers import APP_KEY, APP_SECRET, publish, running_server, wait_until

tmcpy_client = pytest.importorskip("tmcpy.client")


async def test_tmcpy_logs_in_receives_and_confirms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        tmcpy_client, "to_binary", lambda value, encoding="utf-8": str(value).encode(encoding)
    )
    received: list[dict[str, Any]] = []
    async with running_server() as server:
        client = tmcpy_client.TmcClient(server.url, APP_KEY, APP_SECRET, "default", query_message_interval=1)
        client.on("message", lambda message: received.append(message.content))
        try:
            await wait_until(lambda: server.stats.connections == 1, what="tmcpy's CONNECT to be accepted")
            [message_id] = publish(server, 1, first_tid=77)
            await wait_until(lambda: server.pending(APP_KEY) == 0, what="tmcpy's confirm")
        finally:
            client._reconnecting = True  # keep its close handler from reconnecting or exiting the process
            client._stop_query_loop()
            if client.ws is not None:
                client.ws.close()

    assert server.stats.refused == 0
    assert server.stats.malformed == 0
    assert received[0]["id"] == message_id
    assert received[0]["topic"] == "taobao_trade_TradeBuyerPay"
    assert received[0]["content"]["tid"] == 77  # tmcpy parses the JSON body itself
