"""The market's shops: their nicks, user ids and session keys, and how often each sells."""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field

from simulator import catalog


@dataclass(frozen=True, slots=True)
class Shop:
    nick: str
    user_id: int
    session: str = field(repr=False)


def make_shops(rng: random.Random, count: int) -> tuple[Shop, ...]:
    """`count` shops; nicks come from the catalog, numbered once it runs out."""
    if count < 1:
        raise ValueError("the market needs at least one shop")
    shops = []
    for i in range(count):
        base = catalog.SHOP_NICKS[i % len(catalog.SHOP_NICKS)]
        nick = base if i < len(catalog.SHOP_NICKS) else f"{base}{i // len(catalog.SHOP_NICKS) + 1}"
        user_id = 2_200_000_000_000 + rng.randrange(10**11)
        session = f"6100{rng.getrandbits(208):052x}"
        shops.append(Shop(nick=nick, user_id=user_id, session=session))
    return tuple(shops)


class ShopPicker:
    """Picks the shop a new trade belongs to. A few shops sell most: shop i gets weight 1/(i+1)."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._cum: list[float] = []
        acc = 0.0
        for i in range(count):
            acc += 1.0 / (i + 1)
            self._cum.append(acc)

    def pick(self, rng: random.Random) -> int:
        return bisect.bisect_right(self._cum, rng.random() * self._cum[-1]) % self._count
