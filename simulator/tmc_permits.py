"""Which sellers the app has subscribed with `taobao.tmc.user.permit` (docs/top-api.md#shop-onboarding).
TMC delivers an app's messages only for those; with `required` off every seller's are delivered (for a
client that never permits, e.g. a test of the TMC protocol alone)."""

from __future__ import annotations


class TmcPermits:
    def __init__(self, *, required: bool = True) -> None:
        self.required = required
        self._users: set[str] = set()
        self.permit_calls = 0
        self.cancel_calls = 0

    def permit(self, nick: str) -> None:
        self.permit_calls += 1
        self._users.add(nick)

    def cancel(self, nick: str) -> None:
        self.cancel_calls += 1
        self._users.discard(nick)

    def allows(self, nick: str) -> bool:
        return not self.required or nick in self._users

    @property
    def users(self) -> set[str]:
        return set(self._users)
