"""Every stand-in shop permitted for TMC before a bench's daemon starts, through the product's own call:
the steady state of shops an earlier run subscribed. Without it the market's first changes could be
withheld (the stand-in, as the platform, pushes only permitted sellers' messages) while the daemon's
own permits are under way, and a bench that queues a backlog before the daemon starts would measure
reconciliation instead of the stream."""

from __future__ import annotations

from pydantic import SecretStr

from simulator.standin import StandIn
from taobao import shop_calls
from taobao.client import TopClient
from taobao.limiter import TopRateLimiter


async def permit_every_shop(standin: StandIn) -> None:
    client = TopClient(
        app_key=standin.app_key,
        app_secret=SecretStr(standin.app_secret),
        api_url=standin.api_url,
        limiter=TopRateLimiter(1000),
    )
    async with client:
        for shop in standin.shops:
            await shop_calls.permit(client, SecretStr(shop.session))
    missing = {shop.nick for shop in standin.shops} - standin.permits.users
    if missing:
        raise RuntimeError(f"shops not permitted: {sorted(missing)}")
