"""The settings of every command (docs/design.md#one-settings-object), read from the environment and
`.env` by one loader.

`DatabaseSettings` is what a command that only touches the database reads (`migrate`, the demo's
choice of database), `ReportSettings` adds the safety lag `report` needs; `Settings` extends them with
the Taobao app, the shops and the tuning. Each
command builds its settings once, in its `run(args)`, with `settings_or_exit()` (or `load_settings()`)
and passes them down; nothing here runs at import time. Secrets (the app secret, shop sessions, a
database URL that may carry a password) are `SecretStr`, so neither `repr` nor a validation message
ever shows them.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import pydantic_settings
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from common.backoff import BackoffPolicy
from common.errors import OrderSyncError
from common.exit_codes import EXIT_USAGE
from listener.capacity import DEFAULT_MAX_FETCHED_BYTES, DEFAULT_MAX_HELD_BYTES
from store.pg import check_channel
from store.pg_connect import ConnectionLimits
from store.schema import DEFAULT_SCHEMA, check_schema, connection_settings
from taobao.transport import DEFAULT_MAX_ANSWER_BYTES

HINT = "hint: every setting is described in .env.example"


class SettingsError(OrderSyncError):
    """The environment does not describe a runnable service. `problems` has one line per variable;
    no line contains a value, so the message is safe to print and log."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings:\n" + "\n".join(f"  {line}" for line in problems))


class SignMethod(StrEnum):
    MD5 = "md5"
    HMAC = "hmac"
    HMAC_SHA256 = "hmac-sha256"


class LogFormat(StrEnum):
    JSON = "json"
    TEXT = "text"


class ShopConfig(BaseModel):
    """One authorised seller: the nick TMC messages carry and the session (access token) its calls use."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    nick: str = Field(min_length=1)
    session: SecretStr

    @field_validator("nick")
    @classmethod
    def _strip_nick(cls, value: str) -> str:
        stripped = value.strip()
        if not stripped:
            raise ValueError("nick must not be blank")
        return stripped

    @field_validator("session")
    @classmethod
    def _session_not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("session must not be blank")
        return value


class DatabaseSettings(BaseSettings):
    """Where the service's database is: all that `migrate` and `report` need."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        frozen=True,
    )

    # None: `order-sync demo` starts an embedded PostgreSQL, and `check` reports it; every other command
    # refuses to start (`dsn()`). A DSN may hold a password, hence SecretStr.
    database_url: SecretStr | None = None
    # The service's own schema (docs/design.md#its-own-schema): created by `migrate`, set as the
    # search_path of every connection.
    database_schema: str = DEFAULT_SCHEMA

    @field_validator("database_schema")
    @classmethod
    def _schema_is_an_identifier(cls, value: str) -> str:
        try:
            return check_schema(value)
        except ValueError:
            raise ValueError(
                "expected a lower-case PostgreSQL identifier (a-z, 0-9, _; not starting with a digit or "
                "pg_; at most 63 characters), like order_sync"
            ) from None

    def server_settings(self) -> dict[str, str]:
        """What every connection to DATABASE_URL sets: UTC, the service's name, its schema."""
        return connection_settings(self.database_schema)

    # What each database connection gives up on (docs/operations.md#database-timeouts): a round trip
    # (statement, COMMIT) unanswered, a wait for a pooled connection, a session of this service idle
    # inside a transaction (ended by the server, which rolls it back), and TCP keepalive probes.
    database_timeout_seconds: float = Field(default=30.0, gt=0)
    database_acquire_timeout_seconds: float = Field(default=30.0, gt=0)
    database_idle_in_transaction_seconds: float = Field(default=10.0, gt=0)
    database_keepalive_idle_seconds: float = Field(default=30.0, ge=1)
    database_keepalive_interval_seconds: float = Field(default=10.0, ge=1)
    database_keepalive_count: int = Field(default=3, ge=1)

    # The Fernet key the shop registry's sessions are sealed with (docs/operations.md#shops); unset: no
    # registry, the shops are TAOBAO_SHOPS alone. `order-sync shops key` prints a new one.
    sync_secret_key: SecretStr | None = None

    def dsn(self) -> str:
        """DATABASE_URL, or SettingsError when it is not set."""
        if self.database_url is None:
            raise SettingsError(["DATABASE_URL: required but not set"])
        return self.database_url.get_secret_value()

    def connection_limits(self) -> ConnectionLimits:
        return ConnectionLimits(
            command=self.database_timeout_seconds,
            acquire=self.database_acquire_timeout_seconds,
            idle_in_transaction=self.database_idle_in_transaction_seconds,
            keepalive_idle=self.database_keepalive_idle_seconds,
            keepalive_interval=self.database_keepalive_interval_seconds,
            keepalive_count=self.database_keepalive_count,
        )


class ReportSettings(DatabaseSettings):
    """What `report` reads: the database, and the safety lag that tells the unread tail every fresh read
    leaves from a stretch nobody read."""

    # Increment windows end at least this far in the past, so no row can enter a list while its pages
    # are walked; a list read proves only what is older than max(this, the overlap).
    sync_safety_lag_seconds: float = Field(default=30.0, ge=0)


class Settings(ReportSettings):
    """Everything the daemon and the Taobao-facing commands read."""

    taobao_app_key: str = Field(min_length=1)
    taobao_app_secret: SecretStr
    taobao_api_url: str = "https://eco.taobao.com/router/rest"
    taobao_tmc_url: str = "ws://mc.api.taobao.com/"
    taobao_tmc_group: str = Field(default="default", min_length=1)
    taobao_sign_method: SignMethod = SignMethod.HMAC_SHA256
    # One TOP call attempt, whole answer included, after which it is given up and retried: a gateway
    # that stalls or drips its answer cannot hold a worker (docs/operations.md#database-timeouts).
    taobao_call_timeout_seconds: float = Field(default=60.0, gt=0)
    # The largest TOP answer read (after gzip); a larger one fails that call like a malformed answer.
    taobao_max_answer_bytes: int = Field(default=DEFAULT_MAX_ANSWER_BYTES, ge=64 * 1024)
    # Decoded by `_parse_shops` rather than by pydantic-settings, so a JSON error names the variable
    # and never echoes its text (which holds session keys). With SYNC_SECRET_KEY it only seeds the shop
    # registry and may be left out.
    taobao_shops: Annotated[list[ShopConfig], NoDecode]
    # How often the daemon re-reads the shop registry besides hearing its NOTIFY doorbell.
    sync_shops_refresh_seconds: float = Field(default=30.0, gt=0)
    # A session with a refresh token is renewed this long before it expires; one without is announced
    # (metric, /readyz, order-sync check) this long ahead and paused at expiry.
    sync_session_renew_seconds: float = Field(default=86400.0, ge=0)
    sync_session_warn_seconds: float = Field(default=3 * 86400.0, ge=0)

    sync_overlap_seconds: int = Field(default=600, ge=0)
    sync_api_rate: float = Field(default=40.0, gt=0)
    sync_sweep_seconds: float = Field(default=300.0, gt=0)
    # A shop with no change seen this long (0: never) is swept every SYNC_SWEEP_IDLE_SECONDS instead.
    sync_sweep_idle_after_seconds: float = Field(default=3600.0, ge=0)
    sync_sweep_idle_seconds: float = Field(default=1800.0, gt=0)
    # The share of SYNC_API_RATE the sweeps may take: with many shops each is swept less often.
    sync_reconcile_share: float = Field(default=0.1, gt=0, le=1)
    notify_channel: str = Field(default="trade_changed", min_length=1, max_length=63)

    # Listener tuning.
    sync_max_events: int = Field(default=10_000, ge=1)  # TMC message ids held in memory at most
    # ... and the memory their content may take, in bytes (a single message is always let in).
    sync_max_held_bytes: int = Field(default=DEFAULT_MAX_HELD_BYTES, ge=1)
    # Memory of fetched trades waiting for their commit; fetching pauses beyond it (one always fits).
    sync_max_fetched_bytes: int = Field(default=DEFAULT_MAX_FETCHED_BYTES, ge=1)
    sync_batch_size: int = Field(default=100, ge=1)  # trades per store commit at most
    sync_batch_ms: int = Field(default=50, ge=0)  # how long the first trade of a batch waits for company
    sync_drain_seconds: float = Field(default=20.0, ge=0)  # graceful-stop budget for in-flight work
    sync_workers: int = Field(default=0, ge=0)  # fetch concurrency; 0 sizes it from the rate
    sync_api_latency_seconds: float = Field(default=0.15, gt=0)  # expected fullinfo latency, for sizing
    # isv.trade-not-exist this soon after a push is the detail store lagging the message: the message
    # stays held and the fetch is retried; after it, the trade becomes unresolved.
    sync_detail_lag_seconds: float = Field(default=180.0, ge=0)
    # Unresolved trades are tried again after this, doubling (jittered) up to the cap.
    sync_redrive_seconds: float = Field(default=10.0, gt=0)
    sync_redrive_cap_seconds: float = Field(default=600.0, gt=0)

    # Reconciler (see reconciler/__init__.py for how these fit together; SYNC_SAFETY_LAG_SECONDS is in
    # ReportSettings).
    # A shop that normally trades and sends no message for this long is re-read through the lists.
    sync_silence_seconds: float = Field(default=900.0, gt=0)
    # Concurrent backfill fullinfo calls; 0 sizes it from SYNC_API_RATE like the stream's workers.
    sync_backfill_concurrency: int = Field(default=0, ge=0)
    # false (default): after a disconnect or restart the gap is backfilled before the stream resumes.
    # true: the stream resumes at once and the backfill runs beside it (fresher during long outages).
    sync_stream_during_backfill: bool = False
    # Overrides the explicit list of trade types sent with every list call (taobao.fields.ALL_TRADE_TYPES).
    sync_trade_types: Annotated[list[str] | None, NoDecode] = None
    # Days of history a new shop's initial load fetches (0: none; the shop is followed from now on).
    sync_initial_load_days: int = Field(default=90, ge=0, le=90)
    # The longest increment window (the API allows a day; its doc recommends 30 minutes or less).
    sync_backfill_window_seconds: int = Field(default=3600, ge=60, le=86399)
    # How long to wait after isv.trade-service-rejection before the narrowed window is tried (3 min).
    sync_rejection_retry_seconds: float = Field(default=180.0, ge=0)
    # Margin behind now before the stream counts as having proven a moment (pushes still in transit).
    sync_stream_settle_seconds: float = Field(default=5.0, ge=0)
    # How often the reconciler flushes stream coverage, checks for silence and retries open gaps.
    sync_reconcile_seconds: float = Field(default=10.0, gt=0)
    # Names this replica in gap reports, /readyz, metrics and its TOP calls' partner_id; empty: host
    # name and process id. Each replica needs its own.
    sync_replica_id: str = Field(default="", max_length=64)
    # Several replicas on one database: how often each writes its heartbeat, re-reads who is live
    # (its share of SYNC_API_RATE) and rebalances shop leadership. Keep SYNC_STREAM_SETTLE_SECONDS
    # above twice this plus the pushes' transit time.
    sync_heartbeat_seconds: float = Field(default=1.0, gt=0, le=60)
    # How long a replica's TMC (re)connect waits for the shops other replicas lead to be backfilled.
    sync_gate_peer_wait_seconds: float = Field(default=300.0, ge=0)
    # Where TOPATS result files are downloaded during an initial load; unset: the system's temporary
    # directory (TMPDIR, /tmp, ...). Set it to a writable volume when the root filesystem is read-only.
    sync_temp_dir: Path | None = None

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)  # 0: any free port (tests)
    # /readyz: how long the database ping may take, and how long the TMC stream may be down
    # (reconnecting) before the service reports not ready. Reconnect delays grow to 5 s (30 s after a
    # refused CONNECT).
    ready_db_timeout_seconds: float = Field(default=2.0, gt=0)
    ready_stream_grace_seconds: float = Field(default=120.0, ge=0)
    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.JSON

    @model_validator(mode="before")
    @classmethod
    def _registry_holds_the_shops(cls, data: Any) -> Any:
        # With a registry, TAOBAO_SHOPS is an optional seed; without one it is the list of shops.
        if isinstance(data, dict) and data.get("sync_secret_key") and data.get("taobao_shops") is None:
            return {**data, "taobao_shops": []}
        return data

    @field_validator("taobao_shops", mode="before")
    @classmethod
    def _parse_shops(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                raise ValueError('expected a JSON list like [{"nick": "...", "session": "..."}], got nothing')
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                # The error and its position only, never the document: it holds session keys.
                where = f"line {exc.lineno} column {exc.colno}"
                raise ValueError(f"not valid JSON ({exc.msg} at {where})") from None
        if not isinstance(value, list):
            raise ValueError('expected a JSON list of {"nick", "session"} objects')
        return value

    @field_validator("sync_trade_types", mode="before")
    @classmethod
    def _parse_trade_types(cls, value: Any) -> Any:
        # A JSON list or a comma-separated list; blank means "use the full default list".
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return None
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"not valid JSON ({exc.msg})") from None
            else:
                value = [part.strip() for part in text.split(",") if part.strip()]
        if isinstance(value, list) and not value:
            raise ValueError("list at least one trade type, or leave it unset for the full list")
        return value

    @field_validator("taobao_shops")
    @classmethod
    def _unique_nicks(cls, shops: list[ShopConfig], info: ValidationInfo) -> list[ShopConfig]:
        if not shops and not info.data.get("sync_secret_key"):
            raise ValueError("List should have at least 1 item (or set SYNC_SECRET_KEY and use the registry)")
        seen: set[str] = set()
        for shop in shops:
            if shop.nick in seen:
                raise ValueError(f"nick {shop.nick!r} is listed twice")
            seen.add(shop.nick)
        return shops

    @field_validator("notify_channel")
    @classmethod
    def _channel_is_an_identifier(cls, value: str) -> str:
        # The store's own rule: the ERP runs LISTEN with the name unquoted (never echo the value).
        try:
            check_channel(value)
        except ValueError:
            raise ValueError(
                "expected a lower-case PostgreSQL identifier (a-z, 0-9, _; not starting with a digit; "
                "at most 63 characters), like trade_changed"
            ) from None
        return value

    @field_validator("sync_temp_dir", mode="before")
    @classmethod
    def _blank_temp_dir(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("sync_temp_dir")
    @classmethod
    def _writable_dir(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        # Written to, as the download will be: access bits say nothing for root or a read-only mount.
        try:
            with tempfile.TemporaryFile(dir=value):
                pass
        except OSError as exc:
            raise ValueError(f"not a writable directory ({exc.strerror or type(exc).__name__})") from None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _known_level(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().upper()
            if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
                raise ValueError("expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return value

    @field_validator("taobao_api_url", "taobao_tmc_url")
    @classmethod
    def _looks_like_url(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError("expected an absolute URL")
        return value

    def shop_sessions(self) -> dict[str, SecretStr]:
        """nick → session, the lookup the dispatcher uses to route a message to its seller."""
        return {shop.nick: shop.session for shop in self.taobao_shops}

    def redrive_policy(self) -> BackoffPolicy:
        return BackoffPolicy(
            base=self.sync_redrive_seconds, cap=max(self.sync_redrive_seconds, self.sync_redrive_cap_seconds)
        )

    def worker_count(self) -> int:
        """Fetch concurrency. By Little's law `rate × latency` calls are in flight when the quota is
        used fully; twice that absorbs latency spikes. The fetcher's limiter enforces the rate itself,
        so extra workers only wait there, while too few would leave quota unused."""
        if self.sync_workers:
            return self.sync_workers
        wanted = math.ceil(self.sync_api_rate * self.sync_api_latency_seconds * 2)
        return max(4, min(64, wanted))


AnySettings = TypeVar("AnySettings", bound=DatabaseSettings)


def load(kind: type[AnySettings], env_file: str | Path | None = ".env", **overrides: Any) -> AnySettings:
    """`kind` from the environment (and `env_file` when it exists; None skips it; the environment wins
    over the file, `overrides` over both), or SettingsError listing every problem, one per line, by
    variable name."""
    try:
        return kind(_env_file=env_file, **overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    except pydantic_settings.SettingsError as exc:
        # Raised when a complex value cannot be decoded; its text names the field, not the value.
        raise SettingsError([str(exc)]) from None


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """The full `Settings` (see `load`)."""
    return load(Settings, env_file, **overrides)


def settings_or_exit(
    kind: type[AnySettings], env_file: str | None, *, need_database: bool = True, **overrides: Any
) -> AnySettings | int:
    """A command's settings, or the exit code after printing what is wrong to stderr: one line per
    problem, no values. With `need_database`, an unset DATABASE_URL is one of the problems (it is
    looked at once the rest is valid)."""
    try:
        settings = load(kind, env_file, **overrides)
        if need_database:
            settings.dsn()
    except SettingsError as exc:
        print(f"{exc}\n{HINT}", file=sys.stderr)
        return EXIT_USAGE
    return settings


def database_overrides(database_url: str | None) -> dict[str, Any]:
    """A `--database-url` given on the command line, which wins over DATABASE_URL."""
    return {} if database_url is None else {"database_url": database_url}


def add_env_file_option(parser: argparse.ArgumentParser) -> None:
    """`--env-file`, the same on every command."""
    parser.add_argument(
        "--env-file", default=".env", help="settings file read after the environment (default .env)"
    )


def _describe(exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = error["loc"]
        name = str(loc[0]).upper() if loc else "settings"
        for part in loc[1:]:
            name += f"[{part}]" if isinstance(part, int) else f".{part}"
        message = error["msg"]
        if error["type"] == "missing":
            message = "required but not set"
        message = message.removeprefix("Value error, ")
        problems.append(f"{name}: {message}")
    return problems
