"""Fixtures for client tests: one scripted gateway server per module, a fresh client per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from taobao.client import RetryPolicy, TopClient
from taobao.limiter import TopRateLimiter
from tests.taobao.gateway import APP_KEY, SECRET, ScriptedGateway

# Retries in tests: real backoff, tiny steps.
FAST_RETRY = RetryPolicy(max_tries=4, max_time=10.0, base_delay=0.01, max_delay=0.05, ban_margin=0.0)

ClientFactory = Callable[..., TopClient]


@pytest.fixture(scope="module")
async def gateway_server() -> AsyncIterator[tuple[ScriptedGateway, TestServer]]:
    gateway = ScriptedGateway()
    server = TestServer(gateway.app(), host="127.0.0.1", port=0)
    # No access log: it would print every query string, session keys included.
    await server.start_server(access_log=None)
    try:
        yield gateway, server
    finally:
        gateway.release.set()
        await server.close()


@pytest.fixture
async def gateway(gateway_server: tuple[ScriptedGateway, TestServer]) -> AsyncIterator[ScriptedGateway]:
    gw, _ = gateway_server
    gw.reset()
    yield gw
    gw.release.set()


@pytest.fixture
def base_url(gateway_server: tuple[ScriptedGateway, TestServer]) -> str:
    _, server = gateway_server
    return str(server.make_url(""))


@pytest.fixture
async def make_client(base_url: str) -> AsyncIterator[ClientFactory]:
    made: list[TopClient] = []

    def make(**overrides: Any) -> TopClient:
        options: dict[str, Any] = {
            "app_key": APP_KEY,
            "app_secret": SecretStr(SECRET),
            "api_url": base_url + "/router/rest",
            "limiter": TopRateLimiter(1000),
            "retry": FAST_RETRY,
            **overrides,
        }
        client = TopClient(**options)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


@pytest.fixture
def client(make_client: ClientFactory) -> TopClient:
    return make_client()
