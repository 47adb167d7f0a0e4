"""Encryption of the shops' session keys and refresh tokens at rest (docs/operations.md#shops).

Fernet (AES-128-CBC with an HMAC-SHA256 tag, from `cryptography`): authenticated, so a value copied
between rows or edited in the table is refused rather than misread. The key comes from
SYNC_SECRET_KEY; `generate_key()` makes one. Neither the key nor a decrypted value is ever part of a
message.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

from common.errors import OrderSyncError


class SecretKeyError(OrderSyncError):
    """The key is not a Fernet key, or a value was encrypted with another key."""


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


class SecretBox:
    def __init__(self, key: SecretStr) -> None:
        try:
            self._fernet = Fernet(key.get_secret_value().encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise SecretKeyError(
                "SYNC_SECRET_KEY is not a Fernet key (32 url-safe base64-encoded bytes); "
                "`order-sync shops key` prints a new one"
            ) from None

    def seal(self, value: SecretStr) -> bytes:
        return self._fernet.encrypt(value.get_secret_value().encode("utf-8"))

    def open(self, sealed: bytes) -> SecretStr:
        try:
            return SecretStr(self._fernet.decrypt(sealed).decode("utf-8"))
        except InvalidToken:
            raise SecretKeyError(
                "a stored session cannot be decrypted: SYNC_SECRET_KEY is not the key it was stored with"
            ) from None

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"
