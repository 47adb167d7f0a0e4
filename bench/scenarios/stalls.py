"""How long the stream stalled at each TMC reconnect, as the daemon measured it: its
`order_sync_tmc_reconnect_stall_seconds` histogram, scraped from /metrics before each daemon process
stops (a SIGKILL included) and summed over them.

A histogram keeps buckets, not values: the p50 is interpolated inside its bucket as Prometheus'
`histogram_quantile` does, and the max is the upper bound of the highest bucket holding a value.
"""

from __future__ import annotations

import math
import re
import socket
from dataclasses import dataclass, field
from typing import Any

import aiohttp

STALL = "order_sync_tmc_reconnect_stall_seconds"
_BUCKET = re.compile(rf'^{STALL}_bucket\{{le="([^"]+)"\}} (\S+)$')


def free_port() -> int:
    """A port nothing listens on now, for the daemon's HTTP server (so this process can scrape it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(slots=True)
class StallHistogram:
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative count
    total: float = 0.0
    count: float = 0.0
    scrapes: int = 0

    def add(self, text: str) -> None:
        """One scrape's series, added to those of the daemon processes before it."""
        self.scrapes += 1
        for line in text.splitlines():
            bucket = _BUCKET.match(line)
            if bucket is not None:
                bound = float(bucket.group(1))
                self.buckets[bound] = self.buckets.get(bound, 0.0) + float(bucket.group(2))
            elif line.startswith(f"{STALL}_sum "):
                self.total += float(line.split()[1])
            elif line.startswith(f"{STALL}_count "):
                self.count += float(line.split()[1])

    def quantile(self, q: float) -> float | None:
        if self.count <= 0:
            return None
        rank = q * self.count
        lower, below = 0.0, 0.0
        for bound, cumulative in sorted(self.buckets.items()):
            if cumulative >= rank:
                if math.isinf(bound):
                    return lower
                inside = cumulative - below
                return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
            lower, below = bound, cumulative
        return lower

    def max_bound(self) -> float | None:
        """The upper bound of the highest bucket that holds a value (inf: beyond the last bound)."""
        if self.count <= 0:
            return None
        highest = 0.0
        previous = 0.0
        for bound, cumulative in sorted(self.buckets.items()):
            if cumulative > previous:
                highest = bound
            previous = cumulative
        return highest

    def figures(self) -> dict[str, Any]:
        p50, top = self.quantile(0.5), self.max_bound()
        return {
            "count": int(self.count),
            "mean_s": round(self.total / self.count, 2) if self.count else None,
            "p50_s": None if p50 is None else round(p50, 2),
            "max_le_s": top,
            "scrapes": self.scrapes,
        }


async def scrape(port: int, into: StallHistogram) -> bool:
    """Add the daemon's stall series at `port` to `into`; False when it did not answer."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
            http.get(f"http://127.0.0.1:{port}/metrics") as response,
        ):
            if response.status != 200:
                return False
            into.add(await response.text())
            return True
    except (aiohttp.ClientError, TimeoutError):
        return False
