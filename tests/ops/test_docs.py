"""The operator documentation keeps up with the code: every setting is in its table, every metric the
listener registers is in its list."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

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


SOURCES = ("common", "taobao", "store", "listener", "reconciler", "replicas", "daemon", "simulator", "bench",
           "examples", "tests", "scripts")  # fmt: skip
DOC_LINK = re.compile(r"docs/([a-z-]+\.md)(#[a-z0-9-]+)?")
OUTSIDE = re.compile(r"\b(tmc\.md|top_api\.md|STYLE\.md|ARCHITECTURE\.md|seed rules?)\b|§\s?\d")


def _texts() -> list[tuple[Path, str]]:
    files = [p for top in SOURCES for p in (ROOT / top).rglob("*") if p.suffix in (".py", ".sql", "")]
    files += [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    return [(p, p.read_text(encoding="utf-8")) for p in files if p.is_file() and p != Path(__file__)]


def test_comments_cite_only_documents_in_the_repository() -> None:
    outside = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p, text in _texts() for m in OUTSIDE.finditer(text)]
    assert outside == []


def test_every_docs_link_in_the_code_lands_on_an_anchor() -> None:
    anchors = {
        doc.name: set(re.findall(r'<a id="([a-z0-9-]+)"></a>', doc.read_text(encoding="utf-8")))
        for doc in (ROOT / "docs").glob("*.md")
    }
    links = [(path, match) for path, text in _texts() for match in DOC_LINK.finditer(text)]
    assert len(links) > 100
    broken = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path, match in links
        if (match.group(2) or "#")[1:] not in anchors.get(match.group(1), set()) | {""}
        or match.group(1) not in anchors
    ]
    assert broken == []
