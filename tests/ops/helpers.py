"""What the operations tests share: the daemon in this process over real parts, and its HTTP pages."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from daemon.app import compose, open_parts
from daemon.service import Service
from daemon.settings import Settings
from tests.integration.harness import wait_for


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Service]:
    """The daemon as `order-sync run` builds it (migrations, PgStore, TopClient, TmcSession), running
    until the block ends; then a graceful stop."""
    async with open_parts(settings) as (store, client):
        service = compose(settings, store, client)
        task = asyncio.create_task(service.run(), name="ops-daemon")
        try:
            await wait_for(lambda: service.state == "running" or task.done(), 10, "the daemon to start")
            if task.done():
                task.result()
            yield service
        finally:
            service.request_stop("test over")
            async with asyncio.timeout(20):
                await asyncio.gather(task, return_exceptions=True)


def base_url(service: Service) -> str:
    assert service.http_port is not None
    return f"http://127.0.0.1:{service.http_port}"


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as response:
        return response.status, await response.text()


async def readyz(http: aiohttp.ClientSession, service: Service) -> tuple[int, dict[str, Any]]:
    status, text = await get(http, base_url(service) + "/readyz")
    body: dict[str, Any] = json.loads(text)
    return status, body


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """sample name → [(labels, value)], through prometheus-client's parser (it rejects bad syntax)."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return samples


def metric(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when there are none)."""
    return sum(v for have, v in samples.get(name, []) if all(have.get(k) == x for k, x in labels.items()))
