"""`TopClient`: signed, rate-limited, retrying calls to the TOP gateway (docs/top-api.md#http-request,
docs/top-api.md#signature, docs/top-api.md#error-scopes).

Every call takes the app-wide limiter first (docs/design.md#one-quota), is signed over all parameters, and is
retried only when the taxonomy says so (docs/design.md#one-error-taxonomy-three-scopes): transport failures
and `isp.*` back off with full jitter; a ban pauses the limiter for everyone and the call tries again once it
ends; every other error goes straight back to the caller. The session key is a call argument, never stored,
and no log line, repr or exception carries it or the app secret.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import quote, quote_plus

import aiohttp
import backoff
from pydantic import SecretStr, ValidationError
from yarl import URL

from taobao.envelope import parse_response
from taobao.errors import (
    MalformedResponse,
    RateLimited,
    RetryableTopError,
    TopatsDownloadError,
    TopError,
)
from taobao.fields import (
    ALL_TRADE_TYPES,
    FULLINFO_FIELDS,
    LIST_FIELDS,
    MAX_INCREMENT_SPAN,
    MAX_PAGE_SIZE,
    TOPATS_RESULT_GET,
    TOPATS_TRADES_SOLD_GET,
    TRADE_FULLINFO_GET,
    TRADES_SOLD_GET,
    TRADES_SOLD_INCREMENT_GET,
)
from taobao.limiter import Priority, TopRateLimiter
from taobao.models import TopatsTask, Trade, TradePage
from taobao.signing import SignMethod, sign
from taobao.timefmt import format_top_time

logger = logging.getLogger(__name__)

ParamValue = str | int | bool | datetime | Sequence[str] | None

DEFAULT_API_URL = "https://eco.taobao.com/router/rest"
PARTNER_ID = "taobao-order-sync"
SYSTEM_PARAMS = frozenset(
    {"method", "app_key", "timestamp", "v", "format", "sign_method", "sign", "session", "partner_id",
     "target_app_key", "simplify"}
)  # fmt: skip
_FORM_CONTENT_TYPE = "application/x-www-form-urlencoded;charset=utf-8"
# What a successful TOPATS download looks like (Java AtsUtils); zip types added for other servers.
_DOWNLOAD_CONTENT_TYPES = frozenset(
    {
        "application/octet-stream",
        "application/java-archive",
        "application/zip",
        "application/x-zip-compressed",
    }
)
_DOWNLOAD_CHUNK = 64 * 1024
_PAYLOAD_CHARS = 64 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one call tries. Attempts that hit a ban count toward `max_tries` too."""

    max_tries: int = 5
    max_time: float = 120.0  # seconds for one call across all its attempts
    base_delay: float = 0.5  # first backoff step, before full jitter
    max_delay: float = 30.0  # cap on one step
    # Longer bans still pause the limiter, but the call goes back to its caller instead of waiting:
    # an app-quota ban can last until midnight (31062 s was seen).
    max_ban_wait: float = 60.0
    # "N more seconds" is rounded; waiting N + 1 avoids walking back into the ban (docs/top-api.md#bans).
    ban_margin: float = 1.0


@dataclass
class ClientStats:
    """Plain counters for metrics: HTTP attempts by (method, outcome), retries by method, bans."""

    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    bans: int = 0
    ban_seconds: float = 0.0


@functools.lru_cache(maxsize=512)
def _form_quote(text: str) -> str:
    return quote_plus(text)


def encode_form(form: Mapping[str, str]) -> bytes:
    """urlencode() for a form body, with quoted values cached: the long `fields` list of every fullinfo
    call is the same string each time, and quoting it was a measurable share of a call's CPU."""
    return "&".join(f"{_form_quote(k)}={_form_quote(v)}" for k, v in form.items()).encode("utf-8")


def render_param(value: ParamValue) -> str:
    """A parameter value as TOP expects it (Java SDK rules, docs/top-api.md#parameter-values); "" means "not
    sent"."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        return format_top_time(value)
    if isinstance(value, str):
        return value
    return ",".join(value)


# A URL's query string inside an error text (aiohttp puts request URLs in some exceptions).
_QUERY_RE = re.compile(r"\?[^\s'\"<>]*")


def _redact(text: str, secrets: Sequence[str]) -> str:
    """`text` without query strings and without any spelling of `secrets` (raw or URL-encoded)."""
    text = _QUERY_RE.sub("?***", text)
    for secret in secrets:
        if not secret:
            continue
        encoded = URL("http://h/").with_query({"s": secret}).raw_query_string.removeprefix("s=")
        for form in {secret, quote(secret, safe=""), quote_plus(secret), encoded}:
            text = text.replace(form, "***")
    return text


def _wait_steps(base: float, cap: float) -> Generator[float, BaseException | None, None]:
    """The library's capped exponential steps (`backoff.on_exception` adds full jitter), except after a
    ban: no extra wait then, the limiter already holds the retry until the ban ends."""
    steps = backoff.expo(factor=base, max_value=cap)
    next(steps)  # the library's generators are primed before their first value
    exc = yield 0.0  # primed by backoff.on_exception; value unused
    while True:
        exc = yield 0.0 if isinstance(exc, RateLimited) else next(steps)


class TopClient:
    """Async client for the TOP trade APIs. Use `async with` or call `close()`."""

    def __init__(
        self,
        *,
        app_key: str,
        app_secret: SecretStr,
        api_url: str = DEFAULT_API_URL,
        limiter: TopRateLimiter,
        sign_method: SignMethod = "hmac-sha256",
        http: aiohttp.ClientSession | None = None,
        connect_timeout: float = 15.0,
        read_timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        partner_id: str | None = PARTNER_ID,
    ) -> None:
        self.app_key = app_key
        self._secret = app_secret
        self.api_url = api_url
        self.limiter = limiter
        self.sign_method: SignMethod = sign_method
        self.partner_id = partner_id
        self.retry = retry or RetryPolicy()
        self.stats = ClientStats()
        self._http = http
        self._owns_http = http is None
        # Java SDK defaults; no total limit, so a slow but moving download is not cut off.
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._call_with_retries = backoff.on_exception(
            _wait_steps,
            (RetryableTopError, RateLimited),
            max_tries=self.retry.max_tries,
            max_time=self.retry.max_time,
            jitter=backoff.full_jitter,
            giveup=self._gives_up,
            on_backoff=self._log_retry,
            on_giveup=self._log_giveup,
            logger=None,
            base=self.retry.base_delay,
            cap=self.retry.max_delay,
        )(self._attempt)

    # ---- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> TopClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session if this client created it."""
        if self._owns_http and self._http is not None:
            await self._http.close()
            self._http = None

    def _session(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running loop, never in __init__.
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=self._timeout)
        return self._http

    def __repr__(self) -> str:
        return (
            f"TopClient(app_key={self.app_key!r}, api_url={self.api_url!r}, sign_method={self.sign_method!r})"
        )

    # ---- the trade APIs --------------------------------------------------------------------------

    async def trade_fullinfo(
        self,
        session: str,
        tid: int,
        *,
        fields: str = FULLINFO_FIELDS,
        priority: Priority = Priority.STREAM,
    ) -> Trade:
        """`taobao.trade.fullinfo.get`: the trade's current state. `fields` must include `tid`."""
        payload = await self.call(
            TRADE_FULLINFO_GET, {"fields": fields, "tid": tid}, session=session, priority=priority, tid=tid
        )
        item = payload.get("trade")
        if not isinstance(item, dict):
            raise MalformedResponse(
                "no trade object in the response", payload=_dump(payload), method=TRADE_FULLINFO_GET, tid=tid
            )
        try:
            trade = Trade.model_validate(item)
        except ValidationError as exc:
            raise MalformedResponse(
                f"trade failed validation ({exc.error_count()} error(s))",
                payload=_dump(item),
                method=TRADE_FULLINFO_GET,
                tid=tid,
            ) from exc
        if trade.tid != tid:
            raise MalformedResponse(
                f"asked for tid {tid}, got {trade.tid}",
                payload=_dump(item),
                method=TRADE_FULLINFO_GET,
                tid=tid,
            )
        return trade.model_copy(update={"fetched_at": datetime.now(UTC)})

    async def trades_sold_get(
        self,
        session: str,
        *,
        start_created: datetime,
        end_created: datetime,
        page_no: int,
        page_size: int = MAX_PAGE_SIZE,
        fields: str = LIST_FIELDS,
        types: Sequence[str] = ALL_TRADE_TYPES,
        use_has_next: bool = True,
        priority: Priority = Priority.BACKFILL,
    ) -> TradePage:
        """`taobao.trades.sold.get`: one page of trades created in the window, newest first."""
        if end_created < start_created:
            raise ValueError("end_created is before start_created")
        window = {"start_created": start_created, "end_created": end_created}
        return await self._trade_page(
            TRADES_SOLD_GET, session, window, page_no, page_size, fields, types, use_has_next, priority
        )

    async def trades_sold_increment_get(
        self,
        session: str,
        *,
        start_modified: datetime,
        end_modified: datetime,
        page_no: int,
        page_size: int = MAX_PAGE_SIZE,
        fields: str = LIST_FIELDS,
        types: Sequence[str] = ALL_TRADE_TYPES,
        use_has_next: bool = True,
        priority: Priority = Priority.BACKFILL,
    ) -> TradePage:
        """`taobao.trades.sold.increment.get`: one page of trades modified in the window, most recently
        modified first. The window must be shorter than a day (`fields.MAX_INCREMENT_SPAN`)."""
        span = end_modified - start_modified
        if span.total_seconds() <= 0:
            raise ValueError("end_modified must be after start_modified")
        if span > MAX_INCREMENT_SPAN:
            raise ValueError(
                f"increment window of {span} is longer than {MAX_INCREMENT_SPAN}; "
                "TOP allows at most one day per call, split the window"
            )
        window = {"start_modified": start_modified, "end_modified": end_modified}
        return await self._trade_page(
            TRADES_SOLD_INCREMENT_GET,
            session,
            window,
            page_no,
            page_size,
            fields,
            types,
            use_has_next,
            priority,
        )

    async def _trade_page(
        self,
        method: str,
        session: str,
        window: dict[str, datetime],
        page_no: int,
        page_size: int,
        fields: str,
        types: Sequence[str],
        use_has_next: bool,
        priority: Priority,
    ) -> TradePage:
        """One page of a list call; `type` is always sent in full (docs/sync-rules.md#explicit-type)."""
        _check_paging(page_no, page_size, types)
        payload = await self.call(
            method,
            {
                "fields": fields,
                **window,
                "type": list(types),
                "page_no": page_no,
                "page_size": page_size,
                "use_has_next": use_has_next,
            },
            session=session,
            priority=priority,
        )
        return TradePage.from_payload(payload)

    # ---- TOPATS (legacy asynchronous export, docs/top-api.md#topats) ---------------------------------------

    async def topats_trades_sold_get(
        self,
        session: str,
        *,
        start_date: date,
        end_date: date,
        fields: str,
        priority: Priority = Priority.BACKFILL,
    ) -> int:
        """`taobao.topats.trades.sold.get`: start an export of whole days; returns the task id."""
        if end_date < start_date:
            raise ValueError("end_date is before start_date")
        payload = await self.call(
            TOPATS_TRADES_SOLD_GET,
            {
                "start_time": start_date.strftime("%Y%m%d"),
                "end_time": end_date.strftime("%Y%m%d"),
                "fields": fields,
            },
            session=session,
            priority=priority,
        )
        task = payload.get("task")
        task_id = task.get("task_id") if isinstance(task, dict) else None
        if isinstance(task_id, str) and task_id.strip().isdigit():
            task_id = int(task_id)
        if not isinstance(task_id, int) or isinstance(task_id, bool):
            raise MalformedResponse(
                "no task id in the response", payload=_dump(payload), method=TOPATS_TRADES_SOLD_GET
            )
        return task_id

    async def topats_result_get(
        self, task_id: int, *, session: str | None = None, priority: Priority = Priority.BACKFILL
    ) -> TopatsTask:
        """`taobao.topats.result.get`: the task's status and, once done, a single-use download URL."""
        payload = await self.call(TOPATS_RESULT_GET, {"task_id": task_id}, session=session, priority=priority)
        task = payload.get("task")
        if not isinstance(task, dict):
            raise MalformedResponse(
                "no task object in the response", payload=_dump(payload), method=TOPATS_RESULT_GET
            )
        try:
            return TopatsTask.model_validate(task)
        except ValidationError as exc:
            raise MalformedResponse(
                "task failed validation", payload=_dump(task), method=TOPATS_RESULT_GET
            ) from exc

    async def download_topats_result(
        self, url: str, dest: str | os.PathLike[str] | IO[bytes], *, check_code: str | None
    ) -> None:
        """Stream a TOPATS result file into `dest` (a path, or a writable binary file), checking its MD5
        against `check_code`. A path is written through a `.part` file and appears only when the check
        passes. Read the trades with `taobao.topats.iter_trades`. Not a TOP API call: no quota taken."""
        if isinstance(dest, (str, os.PathLike)):
            final = Path(dest)
            partial = final.with_name(final.name + ".part")
            try:
                with partial.open("wb") as fh:
                    await self._download_into(url, fh, check_code)
                partial.replace(final)
            finally:
                partial.unlink(missing_ok=True)
        else:
            await self._download_into(url, dest, check_code)

    async def _download_into(self, url: str, out: IO[bytes], check_code: str | None) -> None:
        digest = hashlib.md5()
        try:
            async with self._session().get(url, timeout=self._timeout) as resp:
                content_type = resp.content_type
                if resp.status != 200:
                    raise TopatsDownloadError(
                        f"download failed: HTTP {resp.status}", method=TOPATS_RESULT_GET
                    )
                if content_type not in _DOWNLOAD_CONTENT_TYPES:
                    # Java AtsUtils: any other content type means the body is an error response.
                    body = await resp.read()
                    parse_response(body, TOPATS_RESULT_GET)  # raises the TopError when it is one
                    raise TopatsDownloadError(
                        f"download returned {content_type!r} instead of a file", method=TOPATS_RESULT_GET
                    )
                async for chunk in resp.content.iter_chunked(_DOWNLOAD_CHUNK):
                    digest.update(chunk)
                    # Local writes of 64 KiB do not stall the loop noticeably.
                    out.write(chunk)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # No `from exc`: aiohttp errors carry the URL, which may hold an access token.
            raise TopatsDownloadError(
                f"download failed: {type(exc).__name__}", method=TOPATS_RESULT_GET
            ) from None
        if check_code is not None and digest.hexdigest() != check_code.strip().lower():
            raise TopatsDownloadError("download does not match its check code", method=TOPATS_RESULT_GET)

    # ---- one call: limiter, signing, transport, envelope -----------------------------------------

    async def call(
        self,
        method: str,
        params: Mapping[str, ParamValue],
        *,
        session: str | None,
        priority: Priority = Priority.STREAM,
        tid: int | None = None,
    ) -> dict[str, Any]:
        """Call any TOP API; returns the object inside `<method>_response`. Retries per the policy."""
        clash = SYSTEM_PARAMS.intersection(params)
        if clash:
            raise ValueError(f"system parameters cannot be passed as business parameters: {sorted(clash)}")
        result: dict[str, Any] = await self._call_with_retries(
            method=method, params=params, session=session, priority=priority, tid=tid
        )
        return result

    async def _attempt(
        self,
        *,
        method: str,
        params: Mapping[str, ParamValue],
        session: str | None,
        priority: Priority,
        tid: int | None,
    ) -> dict[str, Any]:
        await self.limiter.acquire(priority)
        query, form = self._signed_request(method, params, session)
        try:
            async with self._session().post(
                self.api_url,
                params=query,
                data=encode_form(form),
                headers={"Content-Type": _FORM_CONTENT_TYPE},
                timeout=self._timeout,
            ) as resp:
                status = resp.status
                body = await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._count(method, "retryable")
            # No `from exc`: aiohttp errors can carry the request URL, whose query holds the session.
            detail = _redact(str(exc), [session or "", self._secret.get_secret_value()])
            raise RetryableTopError(
                f"network error: {type(exc).__name__}" + (f" ({detail})" if detail else ""),
                method=method,
                tid=tid,
            ) from None
        if status != 200:
            # The official SDK treats any non-200 as a transport failure (docs/top-api.md#http-request).
            self._count(method, "retryable")
            raise RetryableTopError(f"HTTP {status}", method=method, tid=tid)
        try:
            payload = parse_response(body, method, tid=tid)
        except TopError as exc:
            exc.redact(session or "", self._secret.get_secret_value())
            self._count(method, exc.kind.value)
            if isinstance(exc, RateLimited):
                self._on_ban(exc)
            raise
        self._count(method, "ok")
        return payload

    def _signed_request(
        self, method: str, params: Mapping[str, ParamValue], session: str | None
    ) -> tuple[dict[str, str], dict[str, str]]:
        """(query, form): system parameters in the query string, business ones in the form body, as the
        official SDKs send them; empty values are neither sent nor signed."""
        system = {
            "method": method,
            "app_key": self.app_key,
            "timestamp": format_top_time(datetime.now(UTC)),
            "v": "2.0",
            "format": "json",
            "sign_method": self.sign_method,
            "session": session or "",
            "partner_id": self.partner_id or "",
        }
        query = {k: v for k, v in system.items() if v != ""}
        form = {k: rendered for k, v in params.items() if (rendered := render_param(v)) != ""}
        query["sign"] = sign({**form, **query}, self._secret.get_secret_value(), self.sign_method)
        return query, form

    # ---- bookkeeping -----------------------------------------------------------------------------

    def _count(self, method: str, outcome: str) -> None:
        self.stats.calls[(method, outcome)] += 1

    def _on_ban(self, exc: RateLimited) -> None:
        self.stats.bans += 1
        self.stats.ban_seconds += exc.ban_seconds
        self.limiter.pause(exc.ban_seconds + self.retry.ban_margin)
        logger.warning(
            "TOP rate limit on %s: banned for %s s",
            exc.method,
            exc.ban_seconds,
            extra={
                "action": "top_rate_limited",
                "method": exc.method,
                "tid": exc.tid,
                "seconds": exc.ban_seconds,
            },
        )

    def _gives_up(self, exc: Exception) -> bool:
        return isinstance(exc, RateLimited) and exc.ban_seconds > self.retry.max_ban_wait

    def _log_retry(self, details: Any) -> None:
        kwargs = details["kwargs"]
        self.stats.retries[kwargs["method"]] += 1
        logger.warning(
            "TOP %s attempt %d failed (%s); retrying in %.2f s",
            kwargs["method"],
            details["tries"],
            details.get("exception"),
            details["wait"],
            extra={
                "action": "top_retry",
                "method": kwargs["method"],
                "tid": kwargs["tid"],
                "attempt": details["tries"],
            },
        )

    def _log_giveup(self, details: Any) -> None:
        kwargs = details["kwargs"]
        logger.warning(
            "TOP %s failed after %d attempt(s): %s",
            kwargs["method"],
            details["tries"],
            details.get("exception"),
            extra={
                "action": "top_giveup",
                "method": kwargs["method"],
                "tid": kwargs["tid"],
                "attempt": details["tries"],
            },
        )


def _check_paging(page_no: int, page_size: int, types: Sequence[str]) -> None:
    if page_no < 1:
        raise ValueError("page_no starts at 1")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}")
    if isinstance(types, str) or not types:
        # Without `type` TOP returns only a few default types and silently drops the rest.
        raise ValueError("types must be a non-empty sequence of trade types")


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)[:_PAYLOAD_CHARS]
