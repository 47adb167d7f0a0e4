"""Every code and sub-code family of docs/top-api.md#error-codes, docs/top-api.md#sub-codes against the one
classifier."""

from __future__ import annotations

import pytest

from taobao.errors import (
    PermanentTopError,
    RateLimited,
    RetryableTopError,
    ServiceRejection,
    SessionExpired,
    TopError,
    TradeNotFound,
    error_from_response,
)
from taobao.taxonomy import ErrorKind, classify, parse_ban_seconds

R, L, S, J, N, P = (
    ErrorKind.RETRYABLE,
    ErrorKind.RATE_LIMITED,
    ErrorKind.SESSION_EXPIRED,
    ErrorKind.SERVICE_REJECTION,
    ErrorKind.TRADE_NOT_FOUND,
    ErrorKind.PERMANENT,
)
BAN = "This ban will last for 71 more seconds"

CASES: list[tuple[int | None, str | None, str | None, ErrorKind]] = [
    # code 7 and its accesscontrol sub-codes; legacy limit codes 4/5/6/8
    (7, "accesscontrol.limited-by-app-access-count", "This ban will last for 31062 more seconds", L),
    (7, "accesscontrol.limited-by-api-access-count", "This ban will last for 1 more seconds", L),
    (7, "accesscontrol.limited-by-app-api-access-count", "This ban will last for 2 more seconds", L),
    (7, None, None, L),
    (4, None, None, L),
    (5, None, None, L),
    (6, None, None, L),
    (8, None, None, L),
    (15, "accesscontrol.limited-by-api-access-count", None, L),
    (15, "isp.call-limited", None, L),
    (None, None, BAN, L),
    # isp.* under 15, 520 and any other code: retry later
    (15, "isp.top-remote-connection-timeout", None, R),
    (15, "isp.top-remote-connection-timeout-tmall", None, R),
    (15, "isp.top-remote-service-unavailable", None, R),
    (15, "isp.top-remote-service-unavailable-tmall", None, R),
    (15, "isp.top-remote-connection-control-error", None, R),
    (15, "isp.top-remote-unknown-error", None, R),
    (15, "isp.top-remote-unknown-error-tmall", None, R),
    (15, "isp.remote-connection-error", None, R),
    (520, "isp.remote-service-timeout", None, R),
    (520, "isp.remote-connection-error", None, R),
    (15, "isp.top-remote-connection-error", None, R),
    (15, "isp.service-error", None, R),
    (15, "ISP.SERVICE-ERROR", None, R),
    (50, "isp.something-new", None, R),
    (10, None, None, R),
    (10, "some-numeric-or-new-backend-code", None, R),
    (15, None, None, R),
    (520, None, None, R),
    # sessions
    (26, None, None, S),
    (27, None, None, S),
    (27, "invalid-sessionkey", "SessionKey非法", S),
    (27, "session-expired", None, S),
    (15, "isv.invalid-sessionkey", None, S),
    (None, "session-expired", None, S),
    (44, None, None, S),
    (53, None, None, S),
    # the two named isv.* exceptions
    (520, "isv.trade-service-rejection", "超时请求过多，请将查询时间间隔缩短,3分钟后再查询！", J),
    (15, "isv.trade-service-rejection", None, J),
    (15, "isv.trade-not-exist", "交易订单不存在", N),
    (None, "isv.trade-not-exist", None, N),
    # ISV business errors and basic-validation failures: never retry
    (15, "isv.invalid-parameter:end_modified", None, P),
    (15, "isv.permission-api-package-limit", None, P),
    (11, "isv.permission-api-package-limit", None, P),
    (11, None, None, P),
    (12, None, None, P),
    (13, None, None, P),
    (40, None, None, P),
    (41, None, None, P),
    (41, "isv.missing-parameter:fields", None, P),
    (3, None, None, P),
    (9, None, None, P),
    (21, None, None, P),
    (22, None, None, P),
    (23, None, None, P),
    (24, None, None, P),
    (25, None, "Invalid signature", P),
    (28, None, None, P),
    (29, None, None, P),
    (30, None, None, P),
    (31, None, None, P),
    (32, None, None, P),
    (33, None, None, P),
    (34, None, None, P),
    (42, None, None, P),
    (43, None, None, P),
    (47, None, None, P),
    (50, None, None, P),
    # unknown sub-codes (other prefixes, bare strings, numbers) default to permanent
    (15, "accesscontrol.ip-not-allowed", None, P),
    (15, "some-bare-string", None, P),
    (15, "12345", None, P),
    (999, None, None, P),
    (None, None, None, P),
]


@pytest.mark.parametrize(("code", "sub_code", "sub_msg", "expected"), CASES)
def test_classify(code: int | None, sub_code: str | None, sub_msg: str | None, expected: ErrorKind) -> None:
    assert classify(code, sub_code, sub_msg) is expected


EXCEPTION_FOR_KIND: dict[ErrorKind, type[TopError]] = {
    R: RetryableTopError,
    L: RateLimited,
    S: SessionExpired,
    J: ServiceRejection,
    N: TradeNotFound,
    P: PermanentTopError,
}


@pytest.mark.parametrize(("code", "sub_code", "sub_msg", "expected"), CASES)
def test_error_from_response_builds_the_class_of_the_kind(
    code: int | None, sub_code: str | None, sub_msg: str | None, expected: ErrorKind
) -> None:
    error = error_from_response(
        {"code": code, "msg": "m", "sub_code": sub_code, "sub_msg": sub_msg, "request_id": "ej6ptuzf712n"},
        method="taobao.trade.fullinfo.get",
        tid=1,
    )
    assert type(error) is EXCEPTION_FOR_KIND[expected]
    assert error.kind is expected
    assert (error.code, error.sub_code, error.sub_msg) == (code, sub_code, sub_msg)
    assert error.request_id == "ej6ptuzf712n"
    assert error.method == "taobao.trade.fullinfo.get"


def test_trade_not_found_is_permanent() -> None:
    assert issubclass(TradeNotFound, PermanentTopError)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("This ban will last for 1 more seconds", 1),
        ("This ban will last for 22238 more seconds", 22238),
        ("App Call Limited: This ban will last for 2 more seconds.", 2),
        ("ban", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_ban_seconds(text: str | None, seconds: int | None) -> None:
    assert parse_ban_seconds(text) == seconds


def test_rate_limited_reads_the_ban_and_defaults_to_one_second() -> None:
    banned = error_from_response({"code": 7, "msg": "App Call Limited", "sub_msg": BAN})
    assert isinstance(banned, RateLimited)
    assert banned.ban_seconds == 71
    unstated = error_from_response({"code": 7, "msg": "App Call Limited"})
    assert isinstance(unstated, RateLimited)
    assert unstated.ban_seconds == RateLimited.DEFAULT_BAN_SECONDS == 1.0
    zero = error_from_response({"code": 7, "sub_msg": "This ban will last for 0 more seconds"})
    assert isinstance(zero, RateLimited)
    assert zero.ban_seconds == 0


def test_service_rejection_waits_three_minutes() -> None:
    assert ServiceRejection.retry_after == 180.0


def test_error_without_sub_code_and_with_string_code() -> None:
    error = error_from_response({"code": "25", "msg": "Invalid signature", "request_id": "109wcmcgllsj1"})
    assert type(error) is PermanentTopError
    assert error.code == 25
    assert error.sub_code is None
    assert "Invalid signature" in str(error)
    assert "109wcmcgllsj1" in str(error)


def test_error_with_nothing_usable_is_permanent() -> None:
    error = error_from_response({"code": True, "msg": ""})
    assert type(error) is PermanentTopError
    assert error.code is None


def test_redact_masks_echoed_secrets() -> None:
    error = error_from_response({"code": 41, "msg": "bad session s3cr3t", "sub_msg": "key s3cr3t"})
    error.redact("s3cr3t", "")
    assert "s3cr3t" not in str(error)
    assert "s3cr3t" not in repr(error)
    assert error.sub_msg == "key ***"
