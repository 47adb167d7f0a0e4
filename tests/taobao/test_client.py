"""TopClient against a real local gateway that checks every signature."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from listener.ports import TradeFetcher
from taobao.client import RetryPolicy, TopClient
from taobao.errors import (
    AppWideTopError,
    MalformedResponse,
    PermanentTopError,
    RateLimited,
    RetryableTopError,
    ServiceRejection,
    SessionExpired,
    TradeNotFound,
)
from taobao.fields import ALL_TRADE_TYPES, FULLINFO_FIELDS, MAX_INCREMENT_SPAN
from taobao.limiter import Priority, TopRateLimiter
from taobao.timefmt import GMT8, parse_top_time
from taobao.transport import render_param
from tests.taobao.conftest import FAST_RETRY, ClientFactory
from tests.taobao.gateway import (
    APP_KEY,
    SESSION,
    Reply,
    ScriptedGateway,
    ban,
    error,
    ok,
    trade_reply,
)

TID = 2899536456494937165
FULLINFO = "taobao.trade.fullinfo.get"
INCREMENT = "taobao.trades.sold.increment.get"
START = datetime(2024, 5, 1, 12, 0, tzinfo=GMT8)


def test_client_satisfies_the_trade_fetcher_port(client: TopClient) -> None:
    fetcher: TradeFetcher = client
    assert fetcher is client


# ---- request shape ------------------------------------------------------------------------------


@pytest.mark.parametrize("sign_method", ["md5", "hmac", "hmac-sha256"])
async def test_fullinfo_is_signed_and_shaped_like_the_official_sdk(
    make_client: ClientFactory, gateway: ScriptedGateway, sign_method: str
) -> None:
    client = make_client(sign_method=sign_method)
    gateway.then(trade_reply(TID, payment="200.07", seller_memo="a\tb"))
    trade = await client.trade_fullinfo(SESSION, TID)

    assert trade.tid == TID
    assert trade.payment == Decimal("200.07")
    assert trade.raw["seller_memo"] == "a\tb"
    [request] = gateway.requests
    assert request.signed
    assert request.query["sign_method"] == sign_method
    assert set(request.query) == {
        "method", "app_key", "timestamp", "v", "format", "sign_method", "sign", "partner_id"
    }  # fmt: skip
    # The session key in the body only: URLs end up in proxies' and gateways' logs.
    assert request.form == {"fields": FULLINFO_FIELDS, "tid": str(TID), "session": SESSION}
    assert SESSION not in request.url
    assert request.query["method"] == FULLINFO
    assert request.query["app_key"] == APP_KEY
    assert (request.query["v"], request.query["format"]) == ("2.0", "json")
    sent_at = parse_top_time(request.query["timestamp"])
    assert abs(sent_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert "gzip" in request.headers.get("Accept-Encoding", "")
    assert request.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert client.stats.calls[(FULLINFO, "ok")] == 1


async def test_list_calls_send_every_trade_type_and_gmt8_times(
    client: TopClient, gateway: ScriptedGateway
) -> None:
    gateway.then(
        ok(
            "taobao.trades.sold.get",
            {"has_next": True, "trades": {"trade": [{"tid": TID}, {"tid": str(TID + 1)}]}},
        )
    )
    start = datetime(2024, 5, 1, 4, 0, tzinfo=UTC)
    page = await client.trades_sold_get(
        SESSION, start_created=start, end_created=start + timedelta(days=30), page_no=3, page_size=2
    )
    assert [t.tid for t in page.trades] == [TID, TID + 1]
    assert page.has_next is True
    assert page.total_results is None
    [request] = gateway.requests
    assert request.form == {
        "fields": "tid",
        "start_created": "2024-05-01 12:00:00",
        "end_created": "2024-05-31 12:00:00",
        "type": ",".join(ALL_TRADE_TYPES),
        "page_no": "3",
        "page_size": "2",
        "use_has_next": "true",
        "session": SESSION,
    }
    assert "guarantee_trade" not in ALL_TRADE_TYPES
    assert {"fixed", "auction", "step", "auto_delivery", "ec", "cod"} <= set(ALL_TRADE_TYPES)


async def test_increment_page_with_count(client: TopClient, gateway: ScriptedGateway) -> None:
    gateway.then(ok(INCREMENT, {"total_results": 0}))
    page = await client.trades_sold_increment_get(
        SESSION,
        start_modified=START,
        end_modified=START + timedelta(minutes=30),
        page_no=1,
        page_size=40,
        use_has_next=False,
        priority=Priority.SWEEP,
    )
    assert page.trades == []
    assert page.total_results == 0
    assert gateway.requests[0].form["use_has_next"] == "false"
    assert gateway.requests[0].form["end_modified"] == "2024-05-01 12:30:00"


@pytest.mark.parametrize(
    "span",
    [timedelta(days=1), timedelta(days=1, seconds=1), timedelta(days=3), timedelta(0), timedelta(seconds=-1)],
)
async def test_increment_window_outside_the_api_limits_is_refused_without_a_call(
    client: TopClient, gateway: ScriptedGateway, span: timedelta
) -> None:
    with pytest.raises(ValueError, match=r"end_modified must be after|longer than"):
        await client.trades_sold_increment_get(
            SESSION, start_modified=START, end_modified=START + span, page_no=1
        )
    assert gateway.requests == []


async def test_increment_window_just_under_a_day_is_sent(client: TopClient, gateway: ScriptedGateway) -> None:
    gateway.then(ok(INCREMENT, {"has_next": False}))
    await client.trades_sold_increment_get(
        SESSION, start_modified=START, end_modified=START + MAX_INCREMENT_SPAN, page_no=1
    )
    assert gateway.requests[0].form["end_modified"] == "2024-05-02 11:59:59"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"page_no": 0}, "page_no"),
        ({"page_size": 101}, "page_size"),
        ({"page_size": 0}, "page_size"),
        ({"types": ()}, "types"),
        ({"types": "fixed"}, "types"),
    ],
)
async def test_bad_paging_is_refused(
    client: TopClient, gateway: ScriptedGateway, kwargs: dict[str, object], message: str
) -> None:
    options: dict[str, object] = {
        "start_created": START,
        "end_created": START + timedelta(days=1),
        "page_no": 1,
    }
    options.update(kwargs)
    with pytest.raises(ValueError, match=message):
        await client.trades_sold_get(SESSION, **options)  # type: ignore[arg-type]
    assert gateway.requests == []


async def test_naive_datetimes_are_refused(client: TopClient, gateway: ScriptedGateway) -> None:
    with pytest.raises(ValueError, match="naive"):
        await client.trades_sold_increment_get(
            SESSION, start_modified=datetime(2024, 5, 1), end_modified=datetime(2024, 5, 1, 1), page_no=1
        )
    assert gateway.requests == []


async def test_system_parameters_cannot_be_smuggled_in(client: TopClient) -> None:
    with pytest.raises(ValueError, match="system parameters"):
        await client.call(FULLINFO, {"tid": 1, "session": "other"}, session=SESSION)


def test_render_param() -> None:
    assert render_param(True) == "true"
    assert render_param(False) == "false"
    assert render_param(None) == ""
    assert render_param(TID) == str(TID)
    assert render_param(("a", "b")) == "a,b"
    assert render_param(datetime(2024, 1, 1, tzinfo=UTC)) == "2024-01-01 08:00:00"


async def test_empty_values_are_neither_sent_nor_signed(client: TopClient, gateway: ScriptedGateway) -> None:
    gateway.then(ok("taobao.topats.result.get", {"task": {"task_id": 1, "status": "new"}}))
    await client.call("taobao.topats.result.get", {"task_id": 1, "buyer_nick": "", "tag": None}, session=None)
    [request] = gateway.requests
    assert request.signed
    assert "session" not in request.query
    assert request.form == {"task_id": "1"}


async def test_no_partner_id_when_disabled(make_client: ClientFactory, gateway: ScriptedGateway) -> None:
    client = make_client(partner_id=None)
    gateway.then(trade_reply(TID))
    await client.trade_fullinfo(SESSION, TID)
    assert "partner_id" not in gateway.requests[0].query


async def test_a_reply_without_the_wrapper_is_app_wide(client: TopClient, gateway: ScriptedGateway) -> None:
    # The client never asks for simplified JSON: an unwrapped 200 answer is not TOP's (a proxy's).
    gateway.then(ok(FULLINFO, {"trade": {"tid": TID, "orders": [{"oid": 1}]}}, simplified=True))
    with pytest.raises(AppWideTopError):
        await client.trade_fullinfo(SESSION, TID)
    assert len(gateway.requests) == 1


# ---- retries and the taxonomy -------------------------------------------------------------------


async def test_ban_pauses_every_caller_and_is_waited_out(
    make_client: ClientFactory, gateway: ScriptedGateway
) -> None:
    limiter = TopRateLimiter(1000)
    client = make_client(limiter=limiter)
    gateway.then(ban(1))
    gateway.default = lambda request: trade_reply(int(request.form["tid"]))

    first = asyncio.create_task(client.trade_fullinfo(SESSION, TID))
    deadline = time.monotonic() + 5
    while client.stats.bans == 0:
        assert time.monotonic() < deadline, "the ban never arrived"
        await asyncio.sleep(0.001)
    # A second caller, of lower priority, arrives during the ban.
    second = asyncio.create_task(client.trade_fullinfo(SESSION, TID + 1, priority=Priority.BACKFILL))
    trades = await asyncio.wait_for(asyncio.gather(first, second), 10)

    assert [t.tid for t in trades] == [TID, TID + 1]
    banned_at = gateway.requests[0].at
    later = gateway.requests[1:]
    assert len(later) == 2
    assert all(r.at - banned_at >= 0.95 for r in later), [r.at - banned_at for r in later]
    assert all(r.at - banned_at < 3 for r in later)
    assert client.stats.bans == 1
    assert client.stats.ban_seconds == 1
    assert client.stats.calls[(FULLINFO, "rate_limited")] == 1
    assert client.stats.calls[(FULLINFO, "ok")] == 2


async def test_long_ban_pauses_the_limiter_but_returns_to_the_caller(
    client: TopClient, gateway: ScriptedGateway
) -> None:
    gateway.then(ban(31062))
    with pytest.raises(RateLimited) as caught:
        await client.trade_fullinfo(SESSION, TID)
    assert caught.value.ban_seconds == 31062
    assert len(gateway.requests) == 1
    assert client.limiter.pause_remaining() > 31000


async def test_bans_count_toward_the_attempt_limit(
    make_client: ClientFactory, gateway: ScriptedGateway
) -> None:
    client = make_client(retry=RetryPolicy(max_tries=3, base_delay=0.01, max_delay=0.01, ban_margin=0.0))
    gateway.default = lambda request: ban(0)
    with pytest.raises(RateLimited):
        await client.trade_fullinfo(SESSION, TID)
    assert len(gateway.requests) == 3


async def test_isp_errors_are_retried_then_succeed(client: TopClient, gateway: ScriptedGateway) -> None:
    gateway.then(
        error(15, "Remote service error", "isp.remote-service-timeout"),
        error(520, "Remote service error", "isp.top-remote-connection-error"),
        trade_reply(TID),
    )
    trade = await client.trade_fullinfo(SESSION, TID)
    assert trade.tid == TID
    assert len(gateway.requests) == 3
    assert client.stats.retries[FULLINFO] == 2
    assert client.stats.calls[(FULLINFO, "retryable")] == 2
    # every retry is freshly signed and still valid
    assert all(r.signed for r in gateway.requests)


async def test_retries_are_bounded(client: TopClient, gateway: ScriptedGateway) -> None:
    gateway.default = lambda request: error(15, "Remote service error", "isp.service-error")
    with pytest.raises(RetryableTopError) as caught:
        await client.trade_fullinfo(SESSION, TID)
    assert caught.value.sub_code == "isp.service-error"
    assert len(gateway.requests) == FAST_RETRY.max_tries


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (error(15, "Remote service error", "isv.invalid-parameter:tid"), PermanentTopError),
        (error(15, "Remote service error", "isv.trade-not-exist", "交易订单不存在"), TradeNotFound),
        (error(27, "Invalid session", "invalid-sessionkey", "SessionKey非法"), SessionExpired),
        (error(27, "Invalid session", "session-expired"), SessionExpired),
        (error(520, "Remote error", "isv.trade-service-rejection", "3分钟后再查询"), ServiceRejection),
        (error(11, "Insufficient isv permissions", "isv.permission-api-package-limit"), AppWideTopError),
        (error(15, "Remote service error", "some-unknown-code"), AppWideTopError),
    ],
)
async def test_non_retryable_errors_are_raised_after_exactly_one_call(
    client: TopClient, gateway: ScriptedGateway, reply: Reply, expected: type[Exception]
) -> None:
    gateway.then(reply, trade_reply(TID))
    with pytest.raises(expected) as caught:
        await client.trade_fullinfo(SESSION, TID)
    assert type(caught.value) is expected
    assert len(gateway.requests) == 1
    assert caught.value.tid == TID  # type: ignore[attr-defined]


async def test_wrong_secret_is_an_app_wide_signature_error(
    make_client: ClientFactory, gateway: ScriptedGateway
) -> None:
    from pydantic import SecretStr

    client = make_client(app_secret=SecretStr("not-the-secret"))
    with pytest.raises(AppWideTopError) as caught:
        await client.trade_fullinfo(SESSION, TID)
    assert caught.value.code == 25
    assert len(gateway.requests) == 1
    assert not gateway.requests[0].signed


@pytest.mark.parametrize(
    "reply",
    [
        Reply(status=502, body=b"<html>Bad Gateway</html>", content_type="text/html"),
        Reply(status=503, body=b""),
        Reply(status=200, body=b'{"trade_fullinfo_get_response":{"trade":{"tid":'),
        Reply(status=200, body=b"<?xml version='1.0'?><error_response/>", content_type="text/xml"),
    ],
)
async def test_non_200_and_garbled_bodies_are_retried(
    client: TopClient, gateway: ScriptedGateway, reply: Reply
) -> None:
    gateway.then(reply, trade_reply(TID))
    trade = await client.trade_fullinfo(SESSION, TID)
    assert trade.tid == TID
    assert len(gateway.requests) == 2


async def test_read_timeout_is_retried(make_client: ClientFactory, gateway: ScriptedGateway) -> None:
    client = make_client(read_timeout=0.2)
    gateway.then(Reply(hang=True), trade_reply(TID))
    trade = await asyncio.wait_for(client.trade_fullinfo(SESSION, TID), 5)
    assert trade.tid == TID
    assert len(gateway.requests) == 2
    assert client.stats.calls[(FULLINFO, "retryable")] == 1


async def test_connection_refused_is_retryable(make_client: ClientFactory) -> None:
    client = make_client(
        api_url="http://127.0.0.1:9/router/rest", retry=RetryPolicy(max_tries=2, base_delay=0.01)
    )
    with pytest.raises(RetryableTopError, match="network error"):
        await client.trade_fullinfo(SESSION, TID)
    assert client.stats.calls[(FULLINFO, "retryable")] == 2


# ---- unusable success replies -------------------------------------------------------------------


async def test_trade_failing_validation_is_malformed_with_its_payload(
    client: TopClient, gateway: ScriptedGateway
) -> None:
    gateway.then(trade_reply(TID, payment=12.5))
    with pytest.raises(MalformedResponse) as caught:
        await client.trade_fullinfo(SESSION, TID)
    assert '"payment": 12.5' in caught.value.payload
    assert len(gateway.requests) == 1


async def test_other_tid_or_no_trade_is_malformed(client: TopClient, gateway: ScriptedGateway) -> None:
    gateway.then(trade_reply(TID + 1), ok(FULLINFO, {}))
    with pytest.raises(MalformedResponse, match="asked for tid"):
        await client.trade_fullinfo(SESSION, TID)
    with pytest.raises(MalformedResponse, match="no trade"):
        await client.trade_fullinfo(SESSION, TID)


async def test_own_http_session_is_closed_and_borrowed_one_is_not(base_url: str) -> None:
    import aiohttp
    from pydantic import SecretStr

    options = {"app_key": APP_KEY, "app_secret": SecretStr("x"), "limiter": TopRateLimiter(10)}
    async with aiohttp.ClientSession() as http:
        async with TopClient(api_url=base_url, http=http, **options) as borrowing:  # type: ignore[arg-type]
            assert borrowing._session() is http
        assert not http.closed
    async with TopClient(api_url=base_url, **options) as owning:  # type: ignore[arg-type]
        own = owning._session()
    assert own.closed
