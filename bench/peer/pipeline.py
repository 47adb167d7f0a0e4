"""The peer: the order sync a typical ISV writes from the official SDKs, for side-by-side benchmarks.

    tmcpy (TMC client on tornado) ──message──▶ ThreadPoolExecutor ──▶ py-taobao-open RestApi
        (blocking http.client, taobao.trade.fullinfo.get) ──▶ psycopg2 upsert + NOTIFY, commit per trade

It is deliberately ordinary, not a straw man: the same fullinfo fields as the product, a guarded upsert
(an older `modified` never overwrites a newer row), one psycopg2 connection per worker thread, and a
NOTIFY per commit so its publish → database latency is measured exactly like the product's.

What it keeps from the libraries as published (and what that costs; none of it matters while nothing
fails, which is how the benchmark runs it):
* tmcpy confirms every message the moment it arrives, before the handler runs (its client fires
  `confirm_message` before `message`): a crash or a failed fetch loses the change (the product confirms
  only after the commit).
* py-taobao-open opens a new HTTP connection per call (`RestApi.getResponse`), signs with md5 and has no
  retry or rate limit; the executor's queue is unbounded.
* py-taobao-open 1.0.3 ships only the taobaoke/baichuan request classes; `TradeFullinfoGetRequest`
  below is the class the official SDK generator emits for every API (a RestApi subclass with the API's
  parameters as attributes), written out here.

One patch: tmcpy 0.3.7 cannot log in on Python 3 as published. It builds the CONNECT timestamp with
`six.binary_type(int)`, which on Python 3 is `bytes(1700000000000)` — a request for a 1.7 TB zero-filled
buffer — and dies with MemoryError before anything is sent. `patch_tmcpy()` replaces that one helper
with `str(value).encode()`, which is what the Python 2 code did.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg2  # type: ignore[import-untyped,import-not-found,unused-ignore]  # bench extra
import taobao_open  # type: ignore[import-untyped,import-not-found,unused-ignore]  # bench extra
import tmcpy.client  # type: ignore[import-untyped,import-not-found,unused-ignore]  # bench extra
from taobao_open.api.base import (  # type: ignore[import-untyped,import-not-found,unused-ignore]  # bench extra
    RestApi,
    TopException,
)
from tornado import ioloop  # type: ignore[import-untyped,import-not-found,unused-ignore]  # bench extra

from taobao.fields import FULLINFO_FIELDS

logger = logging.getLogger(__name__)

PEER_CHANNEL = "peer_changed"

SCHEMA = """
CREATE TABLE IF NOT EXISTS peer_trades (
    tid          bigint PRIMARY KEY,
    seller_nick  text,
    status       text,
    modified     timestamptz NOT NULL,
    raw          jsonb NOT NULL,
    synced_at    timestamptz NOT NULL DEFAULT now()
)
"""

UPSERT = """
INSERT INTO peer_trades (tid, seller_nick, status, modified, raw)
VALUES (%s, %s, %s, %s::timestamp AT TIME ZONE 'Asia/Shanghai', %s)
ON CONFLICT (tid) DO UPDATE
SET seller_nick = EXCLUDED.seller_nick, status = EXCLUDED.status, modified = EXCLUDED.modified,
    raw = EXCLUDED.raw, synced_at = now()
WHERE peer_trades.modified <= EXCLUDED.modified
"""


def patch_tmcpy() -> None:
    """The one-line fix that lets tmcpy 0.3.7 log in on Python 3 (see the module docstring)."""
    tmcpy.client.to_binary = lambda value, encoding="utf-8": str(value).encode(encoding)


class TradeFullinfoGetRequest(RestApi):  # type: ignore[misc]  # an untyped base class
    """taobao.trade.fullinfo.get in the official SDK's generated shape."""

    def __init__(self, domain: str = "gw.api.taobao.com", port: int = 80) -> None:
        RestApi.__init__(self, domain, port)
        self.fields: str | None = None
        self.tid: int | None = None

    def getapiname(self) -> str:
        return "taobao.trade.fullinfo.get"


@dataclass
class PeerConfig:
    tmc_url: str
    api_url: str
    app_key: str
    app_secret: str = field(repr=False)
    sessions: dict[str, str] = field(repr=False)  # nick → session
    database_url: str = field(repr=False)
    group: str = "default"
    workers: int = 16


class PeerPipeline:
    def __init__(self, config: PeerConfig) -> None:
        self.config = config
        url = urllib.parse.urlsplit(config.api_url)
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or 80
        self._app = taobao_open.appinfo(config.app_key, config.app_secret)
        self._pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="peer-sync")
        self._local = threading.local()
        self.synced = 0
        self.failed = 0
        self.client: Any = None

    # ----- database (one connection per worker thread) -----

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg2.connect(self.config.database_url, application_name="peer-sync")
            self._local.conn = conn
        return conn

    def create_schema(self) -> None:
        conn = psycopg2.connect(self.config.database_url)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(SCHEMA)
        finally:
            conn.close()

    # ----- the work -----

    def on_message(self, message: Any) -> None:
        """tmcpy's `message` event (tornado's thread): hand the trade to the pool."""
        body = message.content
        topic = body.get("topic", "")
        if not str(topic).startswith("taobao_trade_"):
            return
        self._pool.submit(self.sync_trade, body)

    def sync_trade(self, body: dict[str, Any]) -> None:
        try:
            content = body["content"]
            if isinstance(content, str):
                content = json.loads(content)
            tid = int(content["tid"])
            session = self.config.sessions[body["nick"]]
            request = TradeFullinfoGetRequest(self._host, self._port)
            request.set_app_info(self._app)
            request.fields = FULLINFO_FIELDS
            request.tid = tid
            response = request.getResponse(session)
            trade = response["trade_fullinfo_get_response"]["trade"]
            conn = self._connection()
            with conn, conn.cursor() as cur:
                nick, status = trade.get("seller_nick"), trade.get("status")
                cur.execute(UPSERT, (tid, nick, status, trade["modified"], json.dumps(trade)))
                cur.execute(
                    "SELECT pg_notify(%s, %s)",
                    (PEER_CHANNEL, json.dumps({"tid": tid, "modified": trade["modified"]})),
                )
            self.synced += 1
        except (TopException, OSError, KeyError, ValueError, psycopg2.Error):
            self.failed += 1
            logger.exception("sync failed")

    # ----- running -----

    def start(self) -> None:
        """Connect (tmcpy connects in its constructor on the current tornado IOLoop)."""
        patch_tmcpy()
        self.create_schema()
        self.client = tmcpy.client.TmcClient(
            self.config.tmc_url, self.config.app_key, self.config.app_secret, self.config.group,
            query_message_interval=5,
        )  # fmt: skip
        self.client.on("message", lambda message: self.on_message(message))

    def stop(self) -> None:
        if self.client is not None:
            self.client._reconnecting = True  # keep its close handler from reconnecting or exiting
            self.client._stop_query_loop()
            if self.client.ws is not None:
                self.client.ws.close()
        self._pool.shutdown(wait=True)


def run_forever(pipeline: PeerPipeline) -> None:
    loop = ioloop.IOLoop.current()
    pipeline.start()
    try:
        loop.start()
    finally:
        pipeline.stop()
