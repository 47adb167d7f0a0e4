"""Gateway gates: system parameters, timestamps in both forms, the three signatures, sessions, envelopes."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from simulator.standin import StandIn
from taobao.signing import SignMethod
from taobao.timefmt import epoch_ms, format_top_time
from tests.simulator.toputil import TopCaller

FULLINFO = "taobao.trade.fullinfo.get"
SOLD = "taobao.trades.sold.get"


def _some_tid(standin: StandIn, shop: int = 0) -> int:
    return next(iter(standin.market.records(shop))).tid


@pytest.mark.parametrize("sign_method", ["md5", "hmac", "hmac-sha256"])
@pytest.mark.parametrize("epoch_timestamp", [False, True], ids=["gmt8", "epoch-ms"])
@pytest.mark.parametrize("http_method", ["POST", "GET"])
async def test_signed_calls_succeed_for_every_sign_method_and_timestamp_form(
    top: TopCaller, standin: StandIn, sign_method: SignMethod, epoch_timestamp: bool, http_method: str
) -> None:
    tid = _some_tid(standin)
    answer = await top.request(
        FULLINFO,
        {"fields": "tid,status", "tid": str(tid)},
        sign_method=sign_method,
        epoch_timestamp=epoch_timestamp,
        http_method=http_method,
    )
    assert answer.status == 200
    assert answer.body(FULLINFO)["trade"]["tid"] == tid


@pytest.mark.parametrize("sign_method", ["md5", "hmac", "hmac-sha256"])
async def test_wrong_secret_is_code_25(top: TopCaller, standin: StandIn, sign_method: SignMethod) -> None:
    answer = await top.request(
        FULLINFO,
        {"fields": "tid", "tid": str(_some_tid(standin))},
        sign_method=sign_method,
        secret="not-the-secret",
    )
    assert answer.status == 200
    error = answer.error
    assert error["code"] == 25
    assert error["msg"] == "Invalid signature"
    assert "sub_code" not in error
    assert set(error) == {"code", "msg", "request_id"}


async def test_a_parameter_changed_after_signing_is_code_25(top: TopCaller, standin: StandIn) -> None:
    params = top.system_params(FULLINFO)
    params.update(fields="tid", tid=str(_some_tid(standin)))
    from taobao.signing import sign

    params["sign"] = sign(params, standin.app_secret, "md5")
    params["fields"] = "tid,status"
    assert (await top.send(params)).error["code"] == 25


@pytest.mark.parametrize("epoch_timestamp", [False, True], ids=["gmt8", "epoch-ms"])
@pytest.mark.parametrize("skew_minutes", [-11, 11])
async def test_timestamps_more_than_ten_minutes_off_are_code_31(
    top: TopCaller, standin: StandIn, epoch_timestamp: bool, skew_minutes: int
) -> None:
    when = standin.market.clock.now() + timedelta(minutes=skew_minutes)
    stamp = str(epoch_ms(when)) if epoch_timestamp else format_top_time(when)
    answer = await top.request(FULLINFO, {"fields": "tid", "tid": "1"}, overrides={"timestamp": stamp})
    assert answer.error["code"] == 31


async def test_timestamps_within_ten_minutes_are_accepted(top: TopCaller, standin: StandIn) -> None:
    when = standin.market.clock.now() - timedelta(minutes=9)
    answer = await top.request(
        FULLINFO,
        {"fields": "tid", "tid": str(_some_tid(standin))},
        overrides={"timestamp": format_top_time(when)},
    )
    assert "trade" in answer.body(FULLINFO)


async def test_unknown_session_is_code_27_invalid_sessionkey(top: TopCaller) -> None:
    answer = await top.request(FULLINFO, {"fields": "tid", "tid": "1"}, overrides={"session": "6100deadbeef"})
    error = answer.error
    assert (error["code"], error["sub_code"]) == (27, "invalid-sessionkey")


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"method": ""}, 21),
        ({"method": "taobao.no.such.api"}, 22),
        ({"app_key": ""}, 28),
        ({"app_key": "99999999"}, 29),
        ({"timestamp": ""}, 30),
        ({"timestamp": "yesterday"}, 31),
        ({"v": ""}, 32),
        ({"v": "1.0"}, 34),
        ({"format": "xml"}, 23),
        ({"session": ""}, 26),
    ],
)
async def test_system_parameter_errors(top: TopCaller, overrides: dict[str, str], code: int) -> None:
    answer = await top.request(FULLINFO, {"fields": "tid", "tid": "1"}, overrides=overrides)
    assert answer.status == 200
    assert answer.error["code"] == code


async def test_missing_signature_is_code_24(top: TopCaller) -> None:
    params = top.system_params(FULLINFO)
    params.update(fields="tid", tid="1")
    assert (await top.send(params)).error["code"] == 24


async def test_business_parameter_errors(top: TopCaller) -> None:
    missing = (await top.call(FULLINFO, tid="1")).error
    assert (missing["code"], missing["sub_code"]) == (40, "isv.missing-parameter:fields")
    missing_tid = (await top.call(FULLINFO, fields="tid")).error
    assert (missing_tid["code"], missing_tid["sub_code"]) == (40, "isv.missing-parameter:tid")
    bad = (await top.call(FULLINFO, fields="tid", tid="abc")).error
    assert (bad["code"], bad["sub_code"]) == (41, "isv.invalid-parameter:tid")
    bad_type = (await top.call(SOLD, fields="tid", type="fixed,spaceship")).error
    assert (bad_type["code"], bad_type["sub_code"]) == (41, "isv.invalid-parameter:type")
    bad_status = (await top.call(SOLD, fields="tid", status="SHIPPED_TO_MARS")).error
    assert bad_status["sub_code"] == "isv.invalid-parameter:status"
    bad_time = (await top.call(SOLD, fields="tid", start_created="2024/01/01")).error
    assert bad_time["sub_code"] == "isv.invalid-parameter:start_created"


async def test_request_ids_are_short_base36_tokens_on_success_and_error(
    top: TopCaller, standin: StandIn
) -> None:
    ok = await top.call(FULLINFO, fields="tid", tid=str(_some_tid(standin)))
    error = await top.call(FULLINFO, fields="tid", tid="1")
    ids = [ok.body(FULLINFO)["request_id"], error.error["request_id"]]
    for request_id in ids:
        assert re.fullmatch(r"[0-9a-z]{11,14}", request_id), request_id
    assert ids[0] != ids[1]


async def test_error_envelope_is_the_only_root_key(top: TopCaller) -> None:
    answer = await top.call(FULLINFO, fields="tid", tid="1")
    assert list(answer.json) == ["error_response"]
    assert answer.error["code"] == 15
    assert answer.error["sub_code"] == "isv.trade-not-exist"
