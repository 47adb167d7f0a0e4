from __future__ import annotations

import pytest

from taobao.signing import canonical_string, sign, verify

# docs/top-api.md#signature-test-vector: the published worked example, and the two derived vectors.
PARAMS = {
    "method": "taobao.user.seller.get",
    "timestamp": "2013-05-06 13:52:03",
    "format": "xml",
    "app_key": "test",
    "v": "2.0",
    "fields": "nick",
    "sign_method": "md5",
    "session": "test",
}


def test_canonical_string_is_sorted_name_value_pairs() -> None:
    assert canonical_string(PARAMS) == (
        "app_keytestfieldsnickformatxmlmethodtaobao.user.seller.getsessiontest"
        "sign_methodmd5timestamp2013-05-06 13:52:03v2.0"
    )


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("md5", "72CB4D809B375A54502C09360D879C64"),
        ("hmac", "FA15A9D5B42AB2D6F3397843851ED09A"),
        ("hmac-sha256", "267B9C1C7A2FE1CE413DBB95E596616D32107AE0992BE2C22143CFCE303E8E34"),
    ],
)
def test_published_vectors(method: str, expected: str) -> None:
    params = {**PARAMS, "sign_method": method}
    assert sign(params, "test", method) == expected  # type: ignore[arg-type]


def test_sign_and_empty_values_are_not_signed() -> None:
    with_extras = {**PARAMS, "sign": "whatever", "buyer_nick": ""}
    assert sign(with_extras, "test", "md5") == "72CB4D809B375A54502C09360D879C64"


def test_verify_accepts_lower_case_and_rejects_tampering() -> None:
    signed = {**PARAMS, "sign": "72cb4d809b375a54502c09360d879c64"}
    assert verify(signed, "test")
    assert not verify({**signed, "fields": "nick,type"}, "test")
    assert not verify(signed, "wrong-secret")
    assert not verify({**signed, "sign_method": "sha1"}, "test")


def test_tmc_connect_worked_example() -> None:
    # docs/tmc-protocol.md#connect-signing: the TOP md5 rule over app_key, group_name, timestamp.
    params = {"app_key": "12345678", "group_name": "default", "timestamp": "1700000000000"}
    assert sign(params, "secret", "md5") == "F2070B19BC1E0B0DED23DCB4AB23BE3D"
