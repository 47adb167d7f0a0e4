"""The session key and the app secret never reach exception text, reprs or log records."""

from __future__ import annotations

import logging
import traceback
from urllib.parse import quote, quote_plus, urlencode

import pytest
from yarl import URL

from taobao.client import RetryPolicy, TopClient
from taobao.errors import TopError
from tests.taobao.conftest import ClientFactory
from tests.taobao.gateway import SECRET, SESSION, Reply, ScriptedGateway, error

TID = 1234567890123456789
# Every spelling the session key can take in a URL: raw, fully encoded, form-encoded, and as yarl
# (which aiohttp uses) encodes a query value.
YARL_FORM = URL("http://h/").with_query({"s": SESSION}).raw_query_string.removeprefix("s=")
FORBIDDEN = {SESSION, quote(SESSION, safe=""), quote_plus(SESSION), YARL_FORM, SECRET}


def assert_clean(text: str) -> None:
    leaked = [secret for secret in FORBIDDEN if secret in text]
    assert not leaked, f"leaked {leaked!r} in {text!r}"


def assert_exception_clean(exc: BaseException) -> None:
    assert_clean(str(exc))
    assert_clean(repr(exc))
    assert_clean("".join(traceback.format_exception(exc)))


def assert_logs_clean(caplog: pytest.LogCaptureFixture) -> None:
    assert caplog.records, "the scenario should have logged something"
    for record in caplog.records:
        assert_clean(record.getMessage())
        assert_clean(repr(record.__dict__))
    assert_clean(caplog.text)


def test_client_repr_hides_the_secret(client: TopClient) -> None:
    assert_clean(repr(client))
    assert "SecretStr('**********')" in repr(client._secret)


async def test_server_echoing_the_session_is_redacted(
    client: TopClient, gateway: ScriptedGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gateway.default = lambda r: error(
        15, "Remote error for " + r.params["session"], "isp.service-error", "session " + r.params["session"]
    )
    with pytest.raises(TopError) as caught:
        await client.trade_fullinfo(SESSION, TID)
    assert caught.value.sub_msg == "session ***"
    assert_exception_clean(caught.value)
    assert_logs_clean(caplog)


async def test_redirect_loop_error_does_not_leak_the_query(
    make_client: ClientFactory, gateway: ScriptedGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client(retry=RetryPolicy(max_tries=2, base_delay=0.01))
    gateway.default = lambda r: Reply(status=307, headers={"Location": "/router/rest?" + urlencode(r.query)})
    with pytest.raises(TopError) as caught:
        await client.trade_fullinfo(SESSION, TID)
    assert "TooManyRedirects" in str(caught.value)
    assert "/router/rest?***" in str(caught.value)  # the URL was there, its query masked
    assert_exception_clean(caught.value)
    assert_logs_clean(caplog)


async def test_transport_failures_do_not_leak(
    make_client: ClientFactory, gateway: ScriptedGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    refused = make_client(
        api_url="http://127.0.0.1:9/router/rest", retry=RetryPolicy(max_tries=2, base_delay=0.01)
    )
    with pytest.raises(TopError) as caught:
        await refused.trade_fullinfo(SESSION, TID)
    assert_exception_clean(caught.value)
    slow = make_client(read_timeout=0.1, retry=RetryPolicy(max_tries=1))
    gateway.then(Reply(hang=True))
    with pytest.raises(TopError) as caught:
        await slow.trade_fullinfo(SESSION, TID)
    assert_exception_clean(caught.value)
    gateway.then(error(27, "Invalid session", "invalid-sessionkey"))
    with pytest.raises(TopError) as caught:
        await slow.trade_fullinfo(SESSION, TID)
    assert_exception_clean(caught.value)
    assert_logs_clean(caplog)
