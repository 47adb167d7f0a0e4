"""The operator documentation keeps up with the code: every setting is in its table, every metric the
listener registers is in its list."""

from __future__ import annotations

from collections import Counter

from pydantic import SecretStr

from daemon.metrics import DaemonMetrics
from daemon.settings import Settings
from listener.dispatcher import Dispatcher
from listener.session import TmcSession
from tests.integration.harness import ROOT
from tests.listener.fakes import FakeChannel, FakeStore, Journal

DOC = ROOT / "docs" / "operations.md"


def test_every_setting_is_in_the_settings_table() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = [name.upper() for name in Settings.model_fields if f"| `{name.upper()}` |" not in text]
    assert missing == []


async def test_every_listener_metric_is_documented() -> None:
    metrics = DaemonMetrics()
    metrics.watch_top_client(_Stats())

    async def ignore(_message: object) -> None:
        return None

    metrics.watch_tmc_session(
        TmcSession(url="ws://127.0.0.1:1/", app_key="k", app_secret=SecretStr("s"), handler=ignore)
    )
    journal = Journal()
    store = FakeStore(journal)
    Dispatcher(
        sessions={}, store=store, acker=FakeChannel(ignore, journal, ()), max_events=1, metrics=metrics.stream
    )
    text = DOC.read_text(encoding="utf-8")
    names = [line.split()[2] for line in metrics.registry.render().splitlines() if line.startswith("# TYPE")]
    assert len(names) > 25
    missing = [n for n in names if n.removeprefix("order_sync_") not in text]
    assert missing == []


class _Stats:
    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()
        self.retries: Counter[str] = Counter()
        self.bans = 0
        self.ban_seconds = 0.0
