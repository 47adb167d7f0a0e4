"""The app-wide pause: one probe at a time on a backoff, cleared by any answer that is not app-wide, one
log line per state change; and the client over a real socket holding every call behind it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from common.backoff import BackoffPolicy
from taobao.client import TopClient
from taobao.errors import (
    AppWideTopError,
    RetryableTopError,
    SessionExpired,
    TradeNotFound,
)
from taobao.fields import TOPATS_RESULT_GET, TRADE_FULLINFO_GET, TRADES_SOLD_INCREMENT_GET
from taobao.pause import AppPause
from tests.taobao.conftest import ClientFactory
from tests.taobao.gateway import SESSION, ScriptedGateway, error, trade_reply

FAST = BackoffPolicy(base=0.05, cap=0.2, reset_after=60.0)
DENIED = AppWideTopError("Insufficient isv permissions", code=11, sub_code="isv.permission-api-package-limit")
TID = 2899536456494937165


async def _tripped() -> AppPause:
    pause = AppPause(FAST)
    assert await pause.admit() is False
    pause.settle(TRADE_FULLINFO_GET, DENIED, probe=False)
    assert pause.paused
    return pause


async def test_an_app_wide_answer_to_fullinfo_or_a_list_call_pauses_the_app() -> None:
    for method in (TRADE_FULLINFO_GET, TRADES_SOLD_INCREMENT_GET):
        pause = AppPause(FAST)
        pause.settle(method, DENIED, probe=False)
        state = pause.state()
        assert state.paused
        assert "isv.permission-api-package-limit" in (state.reason or "")
        assert state.pauses == 1
        assert state.since is not None


async def test_other_answers_and_other_methods_do_not_pause() -> None:
    pause = AppPause(FAST)
    pause.settle(TOPATS_RESULT_GET, DENIED, probe=False)  # the caller falls back without TOPATS
    pause.settle(TRADE_FULLINFO_GET, TradeNotFound("no such trade"), probe=False)
    pause.settle(TRADE_FULLINFO_GET, RetryableTopError("network error"), probe=False)
    pause.settle(TRADE_FULLINFO_GET, None, probe=False)
    assert not pause.paused
    assert await pause.admit() is False


async def test_one_probe_at_a_time_and_the_rest_wait_until_it_clears() -> None:
    pause = await _tripped()
    waiters = [asyncio.create_task(pause.admit()) for _ in range(5)]
    done, waiting = await asyncio.wait(waiters, timeout=2, return_when=asyncio.FIRST_COMPLETED)
    assert [task.result() for task in done] == [True]
    # Over the cap: a second probe would have been let out by now if one were allowed.
    done, waiting = await asyncio.wait(waiting, timeout=0.3)
    assert not done
    pause.settle(TRADE_FULLINFO_GET, None, probe=True)
    assert await asyncio.wait_for(asyncio.gather(*waiting), 2) == [False] * 4
    assert not pause.paused


async def test_a_probe_answered_app_wide_keeps_the_pause_and_the_next_waits() -> None:
    pause = await _tripped()
    assert await asyncio.wait_for(pause.admit(), 2) is True
    pause.settle(TRADE_FULLINFO_GET, DENIED, probe=True)
    assert pause.paused
    assert pause.state().next_probe_in > 0
    assert await asyncio.wait_for(pause.admit(), 2) is True
    assert pause.state().probes == 2


@pytest.mark.parametrize(
    "answer", [None, TradeNotFound("no such trade"), SessionExpired("session expired", code=27)]
)
async def test_any_answer_that_is_not_app_wide_clears_it(answer: Exception | None) -> None:
    pause = await _tripped()
    assert await asyncio.wait_for(pause.admit(), 2) is True
    pause.settle(TRADE_FULLINFO_GET, answer, probe=True)
    assert not pause.paused


@pytest.mark.parametrize("answer", [RetryableTopError("network error"), asyncio.CancelledError()])
async def test_a_transient_end_of_the_probe_says_nothing(answer: BaseException) -> None:
    pause = await _tripped()
    assert await asyncio.wait_for(pause.admit(), 2) is True
    pause.settle(TRADE_FULLINFO_GET, answer, probe=True)
    assert pause.paused
    assert await asyncio.wait_for(pause.admit(), 2) is True  # the next probe goes out later


async def test_one_log_line_per_state_change_not_per_call(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="taobao.pause")
    pause = await _tripped()
    for _ in range(20):
        pause.settle(TRADE_FULLINFO_GET, DENIED, probe=False)
    for _ in range(3):
        assert await asyncio.wait_for(pause.admit(), 2) is True
        pause.settle(TRADE_FULLINFO_GET, DENIED, probe=True)
    assert await asyncio.wait_for(pause.admit(), 2) is True
    pause.settle(TRADE_FULLINFO_GET, None, probe=True)
    actions = [getattr(r, "action", None) for r in caplog.records]
    assert actions == ["top_app_paused", "top_app_resumed"]


async def test_the_client_holds_every_call_behind_the_probe(
    make_client: ClientFactory, gateway: ScriptedGateway
) -> None:
    client: TopClient = make_client(app_pause=AppPause(FAST))
    permission = error(11, "Insufficient isv permissions", "isv.permission-api-package-limit")
    gateway.then(permission, permission)
    gateway.default = lambda request: trade_reply(int(request.params["tid"]))
    with pytest.raises(AppWideTopError):
        await client.trade_fullinfo(SESSION, TID)
    assert client.app_pause.paused
    # Five callers: the first probe is refused, the second is answered, then the rest go out.
    trades = await asyncio.wait_for(
        asyncio.gather(*(client.trade_fullinfo(SESSION, TID + n) for n in range(5)), return_exceptions=True),
        10,
    )
    refused = [t for t in trades if isinstance(t, AppWideTopError)]
    assert len(refused) == 1  # only the probe that was refused saw the error
    answered = [t for t in trades if not isinstance(t, BaseException)]
    assert len(answered) == 4
    assert not client.app_pause.paused
    # The call that tripped it, the refused probe, the answered probe and the three let through.
    assert len(gateway.requests) == 1 + 5
