"""The shops this process serves right now: nick → session, shared by the stream, the reconciler and the
replica set, and changed in place when the registry changes (`daemon.shop_sync`).

It is a `Mapping` whose content moves: iteration walks a snapshot, so a loop that awaits is never broken
by a change, and looking up a shop that left raises `ShopGone` (an `OrderSyncError`, which the rounds
log and survive, and a `KeyError`, as a mapping's miss should be).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from pydantic import SecretStr

from common.errors import OrderSyncError


class ShopGone(OrderSyncError, KeyError):
    """The shop was removed or paused while work for it was under way."""


@dataclass(frozen=True, slots=True)
class BookChange:
    added: frozenset[str]
    removed: frozenset[str]
    renewed: frozenset[str]  # still served, with a new session

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.renewed)


class ShopBook(Mapping[str, SecretStr]):
    def __init__(self, sessions: Mapping[str, SecretStr] | None = None) -> None:
        self._sessions: dict[str, SecretStr] = dict(sessions or {})

    def __getitem__(self, nick: str) -> SecretStr:
        try:
            return self._sessions[nick]
        except KeyError:
            raise ShopGone(nick) from None

    def __contains__(self, nick: object) -> bool:
        return nick in self._sessions

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._sessions))

    def __len__(self) -> int:
        return len(self._sessions)

    def replace(self, sessions: Mapping[str, SecretStr]) -> BookChange:
        """Serve exactly `sessions` from now on; returns what changed."""
        old = self._sessions
        kept = sessions.keys() & old.keys()
        change = BookChange(
            added=frozenset(sessions.keys() - old.keys()),
            removed=frozenset(old.keys() - sessions.keys()),
            renewed=frozenset(n for n in kept if sessions[n].get_secret_value() != old[n].get_secret_value()),
        )
        self._sessions = dict(sessions)
        return change

    def __repr__(self) -> str:
        return f"ShopBook({sorted(self._sessions)})"
