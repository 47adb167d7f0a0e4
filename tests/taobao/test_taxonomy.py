"""Every code and sub-code family of docs/top-api.md#error-codes, docs/top-api.md#sub-codes against the one
classifier, and the scope (trade, shop, app, transient) of every kind."""

from __future__ import annotations

import pytest

from taobao.errors import (
    AppWideTopError,
    MalformedResponse,
    PermanentTopError,
    RateLimited,
    RetryableTopError,
    ServiceRejection,
    SessionExpired,
    TopError,
    TradeNotFound,
    error_from_response,
)
from taobao.taxonomy import APP_WIDE_CODES, ErrorKind, Scope, classify, parse_ban_seconds, scope_of

R, L, S, J, N, P, A = (
    ErrorKind.RETRYABLE,
    ErrorKind.RATE_LIMITED,
    ErrorKind.SESSION_EXPIRED,
    ErrorKind.SERVICE_REJECTION,
    ErrorKind.TRADE_NOT_FOUND,
    ErrorKind.PERMANENT,
    ErrorKind.APP_WIDE,
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
    # a parameter of this one call refused: about this call (for fullinfo: this trade) alone
    (15, "isv.invalid-parameter:end_modified", None, P),
    (15, "isv.invalid-parameter:tid", None, P),
    (40, None, None, P),
    (41, None, None, P),
    (41, "isv.missing-parameter:fields", None, P),
    (43, None, None, P),
    (15, "isv.task-not-exist", None, P),  # a TOPATS task: start that task again
    (15, "isv.invalid-download-url", "下载链接已失效", P),
    # app-wide: 9, 11, 13, 21-34 (less the session codes), 42, accesscontrol.* other than a ban
    (15, "isv.permission-api-package-limit", None, A),
    (11, "isv.permission-api-package-limit", "scope ids is 289 378", A),
    (11, "accesscontrol.ip-not-allowed", "only allowed to call from 10.8.*.*", A),
    (11, None, None, A),
    (12, None, None, A),
    (13, None, None, A),
    (9, None, None, A),
    (21, None, None, A),
    (22, None, None, A),
    (23, None, None, A),
    (24, None, None, A),
    (25, None, "Invalid signature", A),
    (28, None, None, A),
    (29, "isv.appkey-not-exists", None, A),
    (30, None, None, A),
    (31, None, "时间戳错误，与服务器时间相差不能超过10分钟", A),
    (32, None, None, A),
    (33, None, None, A),
    (34, None, None, A),
    (42, None, None, A),
    (15, "accesscontrol.ip-not-allowed", None, A),
    (None, "accesscontrol.app-disabled", None, A),
    # unknown codes and sub-codes (other prefixes, bare strings, numbers, new isv.*): app-wide, never
    # the message's fault
    (3, None, None, A),
    (47, None, None, A),
    (50, None, None, A),
    (15, "isv.unknown-error-99999", None, A),
    (99999, "isv.unknown-error-99999", "未知错误", A),
    (15, "some-bare-string", None, A),
    (15, "12345", None, A),
    (999, None, None, A),
    (None, None, None, A),
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
    A: AppWideTopError,
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


def test_every_listed_app_wide_code_is_app_wide_and_the_session_codes_are_not() -> None:
    listed = {9, 11, 12, 13, 42, *range(21, 35)}
    assert listed - APP_WIDE_CODES == {26, 27}
    for code in listed - {26, 27}:
        assert classify(code, None) is A, code
        assert classify(code, "isv.whatever") is A, code
    assert classify(26, None) is S
    assert classify(27, None) is S


@pytest.mark.parametrize(
    ("kind", "scope"),
    [(R, Scope.TRANSIENT), (L, Scope.TRANSIENT), (J, Scope.TRANSIENT), (S, Scope.SHOP),
     (N, Scope.TRADE), (P, Scope.TRADE), (A, Scope.APP)],
)  # fmt: skip
def test_every_kind_has_one_scope(kind: ErrorKind, scope: Scope) -> None:
    assert scope_of(kind) is scope
    assert EXCEPTION_FOR_KIND[kind]("m").scope is scope


def test_a_trade_failing_validation_is_about_that_trade() -> None:
    assert MalformedResponse("trade failed validation", payload="{}").scope is Scope.TRADE


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
    assert type(error) is AppWideTopError
    assert error.code == 25
    assert error.sub_code is None
    assert "Invalid signature" in str(error)
    assert "109wcmcgllsj1" in str(error)


def test_error_with_nothing_usable_is_app_wide() -> None:
    error = error_from_response({"code": True, "msg": ""})
    assert type(error) is AppWideTopError
    assert error.code is None


def test_redact_masks_echoed_secrets() -> None:
    error = error_from_response({"code": 41, "msg": "bad session s3cr3t", "sub_msg": "key s3cr3t"})
    error.redact("s3cr3t", "")
    assert "s3cr3t" not in str(error)
    assert "s3cr3t" not in repr(error)
    assert error.sub_msg == "key ***"
