"""Progress of a long job: one line rewritten in place on a terminal, a log line now and then otherwise.

A single `\\r` line needs no dependency and survives any terminal width we care about; the `rich`
package would add a nicer bar but a dependency for one line is not worth it.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

logger = logging.getLogger(__name__)


class Progress:
    def __init__(
        self,
        label: str,
        *,
        out: TextIO | None = None,
        log_every: float = 10.0,
        shop: str | None = None,
    ) -> None:
        self.label = label
        self.shop = shop
        self._out = out
        self._tty = out is not None and out.isatty()
        self._log_every = log_every
        self._started = time.monotonic()
        self._last_shown = 0.0
        self.trades = 0
        self.parts_done = 0
        self.parts_total = 0
        self.stage = ""

    @classmethod
    def for_terminal(cls, label: str, *, shop: str | None = None) -> Progress:
        return cls(label, out=sys.stderr, shop=shop)

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self._started
        return self.trades / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        parts = f" · part {self.parts_done}/{self.parts_total}" if self.parts_total else ""
        stage = f" · {self.stage}" if self.stage else ""
        return f"{self.label}: {self.trades:,} trades{parts} · {self.rate:,.0f}/s{stage}"

    def update(self, *, trades: int = 0, stage: str | None = None, force: bool = False) -> None:
        self.trades += trades
        if stage is not None:
            self.stage = stage
        now = time.monotonic()
        if self._tty and self._out is not None:
            if force or now - self._last_shown >= 0.2:
                self._out.write("\r" + self.line().ljust(100)[:100])
                self._out.flush()
                self._last_shown = now
        elif force or now - self._last_shown >= self._log_every:
            self._last_shown = now
            logger.info("%s", self.line(), extra={"action": "progress", "shop": self.shop})

    def done(self) -> None:
        self.update(force=True)
        if self._tty and self._out is not None:
            self._out.write("\n")
            self._out.flush()
