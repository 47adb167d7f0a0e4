"""Transport failures a local server cannot easily produce, mocked with aioresponses."""

from __future__ import annotations

import re
from collections.abc import Iterator

import aiohttp
import pytest
from aioresponses import aioresponses

from taobao.client import RetryPolicy, TopClient
from taobao.errors import RetryableTopError
from tests.taobao.conftest import ClientFactory
from tests.taobao.gateway import SESSION

URL = "http://top.invalid/router/rest"
ANY_QUERY = re.compile(r"^http://top\.invalid/router/rest\?.*$")
TID = 42
OK_BODY = '{"trade_fullinfo_get_response":{"trade":{"tid":42}}}'


@pytest.fixture
def mocked() -> Iterator[aioresponses]:
    with aioresponses() as m:
        yield m


@pytest.fixture
def mocked_client(make_client: ClientFactory) -> TopClient:
    return make_client(api_url=URL)


@pytest.mark.parametrize(
    "failure",
    [
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("Response payload is not completed"),
        aiohttp.ClientOSError(104, "Connection reset by peer"),
        TimeoutError(),
    ],
)
async def test_transport_failures_are_retried(
    mocked: aioresponses, mocked_client: TopClient, failure: Exception
) -> None:
    mocked.post(ANY_QUERY, exception=failure)
    mocked.post(ANY_QUERY, status=200, body=OK_BODY, content_type="text/plain")
    trade = await mocked_client.trade_fullinfo(SESSION, TID)
    assert trade.tid == TID
    assert mocked_client.stats.calls[("taobao.trade.fullinfo.get", "retryable")] == 1
    assert mocked_client.stats.calls[("taobao.trade.fullinfo.get", "ok")] == 1


async def test_body_is_read_whatever_the_content_type_says(
    mocked: aioresponses, mocked_client: TopClient
) -> None:
    # The gateway's Content-Type is not relied upon (docs/top-api.md#http-request).
    mocked.post(ANY_QUERY, status=200, body=OK_BODY, content_type="text/javascript;charset=GBK")
    assert (await mocked_client.trade_fullinfo(SESSION, TID)).tid == TID


async def test_persistent_failure_gives_up_after_max_tries(
    mocked: aioresponses, make_client: ClientFactory
) -> None:
    client = make_client(api_url=URL, retry=RetryPolicy(max_tries=3, base_delay=0.001, max_delay=0.001))
    mocked.post(ANY_QUERY, exception=aiohttp.ServerDisconnectedError(), repeat=True)
    with pytest.raises(RetryableTopError, match="ServerDisconnectedError"):
        await client.trade_fullinfo(SESSION, TID)
    assert client.stats.calls[("taobao.trade.fullinfo.get", "retryable")] == 3
    assert client.stats.retries["taobao.trade.fullinfo.get"] == 2
