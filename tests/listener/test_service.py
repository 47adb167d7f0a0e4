"""The composed service: burst mode, graceful drain, supervision, HTTP endpoints, signals, exit codes."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from common.exit_codes import EXIT_FAILED, EXIT_OK
from daemon.service import Service, ServiceFailed, SideTask, run_daemon, serve
from daemon.settings import Settings
from listener.ports import MessageHandler
from taobao.errors import SessionExpired
from taobao.tmc.events import TmcMessage
from tests.listener.fakes import FakeChannel, FakeFetcher, FakeStore, Journal, message
from tests.listener.harness import FAST_BACKOFF


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "taobao_app_key": "12345678",
        "taobao_app_secret": "app-secret",
        "taobao_shops": [
            {"nick": "shop-a", "session": "session-of-shop-a"},
            {"nick": "shop-b", "session": "session-of-shop-b"},
        ],
        "http_host": "127.0.0.1",
        "http_port": 0,
        "sync_batch_ms": 0,
        "sync_drain_seconds": 5,
        "sync_workers": 2,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@dataclass
class Rig:
    journal: Journal
    fetcher: FakeFetcher
    store: FakeStore
    service: Service
    channels: list[FakeChannel] = field(default_factory=list)

    @property
    def channel(self) -> FakeChannel:
        return self.channels[0]


def make_rig(
    preloaded: Sequence[TmcMessage] = (),
    side_tasks: dict[str, SideTask] | None = None,
    **overrides: Any,
) -> Rig:
    journal = Journal()
    fetcher = FakeFetcher(journal)
    store = FakeStore(journal)
    channels: list[FakeChannel] = []

    def channel_factory(handler: MessageHandler) -> FakeChannel:
        channel = FakeChannel(handler, journal, preloaded)
        channels.append(channel)
        return channel

    service = Service(
        make_settings(**overrides),
        fetcher=fetcher,
        store=store,
        channel_factory=channel_factory,
        side_tasks=side_tasks,
        store_backoff=FAST_BACKOFF,
    )
    return Rig(journal, fetcher, store, service, channels)


async def eventually(condition: Callable[[], bool]) -> None:
    """Poll a condition with a deadline (for state that has no event of its own)."""
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 - polling with a deadline is deliberate here
            await asyncio.sleep(0.002)


async def test_burst_mode_returns_once_everything_is_committed_and_confirmed() -> None:
    preloaded = [message(1, 100), message(2, 100), message(3, 200, shop="shop-b"), message(4, 300)]
    rig = make_rig(preloaded)
    async with asyncio.timeout(10):
        await rig.service.run_until_idle(idle_seconds=0.05)
    assert sorted(rig.journal.confirmed) == [1, 2, 3, 4]
    assert sorted(set(rig.store.committed_tids)) == [100, 200, 300]
    assert rig.channel.stopped
    assert rig.service.state == "stopped"
    assert "idle" in str(rig.service.stop_reason)
    assert rig.journal.violations == []


async def test_graceful_stop_finishes_in_flight_work_and_takes_nothing_new() -> None:
    rig = make_rig()
    gate = rig.fetcher.hold_next(100)
    run = asyncio.create_task(rig.service.run())
    await eventually(lambda: rig.service.state == "running")
    await rig.channel.deliver(message(1, 100))
    await rig.fetcher.wait_calls(100, 1)

    rig.service.request_stop("test")
    await eventually(lambda: rig.service.state == "draining")
    late = asyncio.create_task(rig.channel.deliver(message(2, 200)))  # parks: intake is closed
    for _ in range(10):
        await asyncio.sleep(0)
    assert not late.done()
    assert not rig.channel.stopped  # the channel stays up so the drained work can be confirmed
    gate.set()
    async with asyncio.timeout(10):
        await run
        await late
    assert rig.journal.confirmed == [1]
    assert rig.fetcher.calls_for(200) == 0
    assert rig.channel.stopped
    assert rig.service.pipeline.dispatcher.parked_count == 1
    assert rig.journal.violations == []


async def test_work_that_outlasts_the_drain_budget_is_handed_back_unconfirmed() -> None:
    rig = make_rig(sync_drain_seconds=0.05)
    rig.fetcher.hold_next(100)  # never released
    run = asyncio.create_task(rig.service.run())
    await eventually(lambda: rig.service.state == "running")
    await rig.channel.deliver(message(1, 100))
    await rig.channel.deliver(message(2, 200))
    await eventually(lambda: 2 in rig.journal.confirmed)
    rig.service.request_stop("test")
    async with asyncio.timeout(10):
        await run
    assert rig.journal.confirmed == [2]
    assert rig.channel.failed == [(1, "service stopping")]
    assert rig.store.committed_tids == [200]
    assert rig.journal.violations == []


async def test_a_second_stop_request_skips_the_rest_of_the_drain() -> None:
    rig = make_rig(sync_drain_seconds=60)
    rig.fetcher.hold_next(100)  # never released
    run = asyncio.create_task(rig.service.run())
    await eventually(lambda: rig.service.state == "running")
    await rig.channel.deliver(message(1, 100))
    await rig.fetcher.wait_calls(100, 1)
    rig.service.request_stop("first")
    await eventually(lambda: rig.service.state == "draining")
    rig.service.request_stop("second")
    async with asyncio.timeout(10):
        await run
    assert rig.journal.confirmed == []
    assert rig.channel.failed_ids == [1]


async def test_a_dying_side_task_stops_the_service_with_its_reason() -> None:
    async def reconciler() -> None:
        raise RuntimeError("ledger table missing")

    rig = make_rig(side_tasks={"reconciler": reconciler})
    with pytest.raises(ServiceFailed, match="'reconciler' died: RuntimeError: ledger table missing"):
        async with asyncio.timeout(10):
            await rig.service.run()
    assert rig.channel.stopped
    assert rig.service.state == "stopped"


async def test_a_channel_that_fails_stops_the_service() -> None:
    rig = make_rig()
    rig.channel.run_error = ConnectionError("TMC refused CONNECT 10 times in a row")
    with pytest.raises(ServiceFailed, match="'tmc-channel' died: ConnectionError"):
        async with asyncio.timeout(10):
            await rig.service.run()


async def test_a_side_task_that_returns_is_a_failure_too() -> None:
    async def quits() -> None:
        return None

    rig = make_rig(side_tasks={"sweeper": quits})
    with pytest.raises(ServiceFailed, match="'sweeper' ended unexpectedly"):
        async with asyncio.timeout(10):
            await rig.service.run()


async def test_health_readiness_and_metrics_over_http() -> None:
    rig = make_rig()
    run = asyncio.create_task(rig.service.run())
    await eventually(lambda: rig.service.state == "running")
    base = f"http://127.0.0.1:{rig.service.http_port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/healthz") as response:
            assert response.status == 200
        async with http.get(f"{base}/readyz") as response:
            assert response.status == 200
            body = await response.json()
            assert body["shops"] == {"shop-a": "active", "shop-b": "active"}

        rig.fetcher.session_errors["session-of-shop-a"] = SessionExpired("invalid session", code=27)
        await rig.channel.deliver(message(1, 100))
        await rig.channel.deliver(message(2, 200, shop="shop-b"))
        await eventually(lambda: rig.service.pipeline.dispatcher.held_count == 0)
        async with http.get(f"{base}/readyz") as response:
            assert response.status == 503
            body = await response.json()
            assert body["shops"] == {"shop-a": "paused", "shop-b": "active"}
            assert "1 shop(s) paused: session rejected" in body["problems"]
        async with http.get(f"{base}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await response.text()
    assert "order_sync_tmc_messages_received_total 2" in text
    assert "order_sync_tmc_messages_confirmed_total 1" in text
    assert 'order_sync_fullinfo_fetches_total{outcome="session_expired"} 1' in text
    assert 'order_sync_shop_paused{shop="shop-a"} 1' in text
    assert "session-of-shop" not in text
    rig.service.request_stop("test")
    async with asyncio.timeout(10):
        await run


async def test_sigterm_through_serve_is_a_graceful_stop_with_exit_code_0() -> None:
    rig = make_rig()
    before = signal.getsignal(signal.SIGTERM)
    served = asyncio.create_task(serve(rig.service))
    await eventually(lambda: rig.service.state == "running")
    await rig.channel.deliver(message(1, 100))
    os.kill(os.getpid(), signal.SIGTERM)
    async with asyncio.timeout(10):
        assert await served == EXIT_OK
    assert rig.journal.confirmed == [1]
    assert rig.service.stop_reason == "signal SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


async def test_serve_returns_exit_code_1_when_a_task_dies() -> None:
    async def broken() -> None:
        raise RuntimeError("x")

    rig = make_rig(side_tasks={"broken": broken})
    async with asyncio.timeout(10):
        assert await serve(rig.service) == EXIT_FAILED


def test_run_daemon_exits_2_on_invalid_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("TAOBAO_APP_SECRET", "very-secret-value")
    monkeypatch.setenv("TAOBAO_SHOPS", "[{")

    def build(settings: Settings) -> Any:
        raise AssertionError("must not build a service from invalid settings")

    assert run_daemon(build, env_file=None) == 2
    err = capsys.readouterr().err
    assert "TAOBAO_APP_KEY: required but not set" in err
    assert "TAOBAO_SHOPS: not valid JSON" in err
    assert "very-secret-value" not in err
