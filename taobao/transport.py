"""One call to the TOP gateway: the app-wide limiter, signing, the HTTP POST, the response envelope and
the retries (docs/top-api.md#http-request, docs/top-api.md#signature, docs/top-api.md#error-scopes).

Every call takes the app-wide limiter first (docs/design.md#one-quota), is signed over all parameters, and is
retried only when the taxonomy says so (docs/design.md#one-error-taxonomy-three-scopes): transport failures
and `isp.*` back off with full jitter; a ban pauses the limiter for everyone and the call tries again once it
ends; every other error goes straight back to the caller. An app-wide error also pauses every later
call of the app behind one probe (`taobao.pause.AppPause`) until TOP answers again. The session key is
a call argument, never stored, and no log line, repr or exception carries it or the app secret.
`taobao.client.TopClient` adds the trade APIs on top.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import Counter
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, quote_plus

import aiohttp
import backoff
from pydantic import SecretStr
from yarl import URL

from taobao.clock import ClockSkew, parse_http_date
from taobao.envelope import parse_response
from taobao.errors import MalformedResponse, RateLimited, RetryableTopError, TopError
from taobao.limiter import Priority, TopRateLimiter
from taobao.pause import AppPause
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
# The largest answer read into memory, after gzip: a trade of a thousand orders is a few MB; past this
# the answer is an error of the call (a trade's fetch: that trade's), never an exhausted process.
DEFAULT_MAX_ANSWER_BYTES = 32 * 1024 * 1024
_READ_CHUNK = 64 * 1024


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


def _with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


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


async def read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The answer's body (decompressed), or None as soon as it passes `limit` bytes; the rest is not
    read. A Content-Length (the compressed size) already past the limit is not read at all."""
    if resp.content_length is not None and resp.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _wait_steps(base: float, cap: float) -> Generator[float, BaseException | None, None]:
    """The library's capped exponential steps (`backoff.on_exception` adds full jitter), except after a
    ban: no extra wait then, the limiter already holds the retry until the ban ends."""
    steps = backoff.expo(factor=base, max_value=cap)
    next(steps)  # the library's generators are primed before their first value
    exc = yield 0.0  # primed by backoff.on_exception; value unused
    while True:
        exc = yield 0.0 if isinstance(exc, RateLimited) else next(steps)


class TopTransport:
    """Signed, rate-limited, retrying TOP calls over one HTTP session. Use `async with` or call `close()`."""

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
        call_timeout: float | None = None,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        retry: RetryPolicy | None = None,
        partner_id: str | None = PARTNER_ID,
        app_pause: AppPause | None = None,
    ) -> None:
        self.app_key = app_key
        self._secret = app_secret
        self.api_url = api_url
        self.limiter = limiter
        self.sign_method: SignMethod = sign_method
        self.partner_id = partner_id
        self.retry = retry or RetryPolicy()
        self.app_pause = app_pause or AppPause()
        # Taobao's clock against ours, from the Date header of every TOP answer (docs/design.md#clock-skew).
        self.clock_skew = ClockSkew()
        self.max_answer_bytes = max_answer_bytes
        self.stats = ClientStats()
        self._http = http
        self._owns_http = http is None
        # Java SDK defaults per socket operation. Downloads (`socket_timeouts`) have no total limit, so a
        # slow but moving file is not cut off; an API answer does (`call_timeout`, by default the
        # connect and two reads), so one that drips a byte at a time is given up and retried.
        self.socket_timeouts = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        total = call_timeout if call_timeout is not None else connect_timeout + 2 * read_timeout
        self._timeout = aiohttp.ClientTimeout(
            total=total, sock_connect=connect_timeout, sock_read=read_timeout
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

    async def __aenter__(self) -> Self:
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
            self._http = aiohttp.ClientSession(timeout=self.socket_timeouts)
        return self._http

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(app_key={self.app_key!r}, api_url={self.api_url!r}, "
            f"sign_method={self.sign_method!r})"
        )

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
        """One attempt, admitted by the app-wide pause first (it holds every call but its probe while
        an app-wide failure lasts) and reported to it afterwards."""
        probe = await self.app_pause.admit()
        error: BaseException | None = None
        try:
            return await self._send(method=method, params=params, session=session, priority=priority, tid=tid)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.app_pause.settle(method, error, probe=probe)

    async def _send(
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
        sent = datetime.now(UTC)
        try:
            async with self._session().post(
                # Quoted here with the form's cached quoting: aiohttp's own `params=` path re-parses
                # the URL and quotes every value on every call.
                URL(_with_query(self.api_url, encode_form(query).decode("ascii")), encoded=True),
                data=encode_form(form),
                headers={"Content-Type": _FORM_CONTENT_TYPE},
                timeout=self._timeout,
            ) as resp:
                status = resp.status
                body = await read_capped(resp, self.max_answer_bytes)
                server_date = parse_http_date(resp.headers.get("Date"))
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
        received = datetime.now(UTC)
        if body is None:
            # Not the platform's hiccup but this answer: retrying would read it again.
            self._count(method, MalformedResponse.kind.value)
            raise MalformedResponse(
                f"answer larger than {self.max_answer_bytes} bytes", method=method, tid=tid
            )
        try:
            payload = parse_response(body, method, tid=tid)
        except TopError as exc:
            if server_date is not None and exc.code is not None:
                # TOP's own error answer (a code 31 above all), not a proxy's page.
                self.clock_skew.observe_answer(server_date, sent, received)
            exc.redact(session or "", self._secret.get_secret_value())
            self._count(method, exc.kind.value)
            if isinstance(exc, RateLimited):
                self._on_ban(exc)
            raise
        if server_date is not None:
            self.clock_skew.observe_answer(server_date, sent, received)
        self._count(method, "ok")
        return payload

    def _signed_request(
        self, method: str, params: Mapping[str, ParamValue], session: str | None
    ) -> tuple[dict[str, str], dict[str, str]]:
        """(query, form): system parameters in the query string, as the official SDKs send them, but
        for the session key, which goes in the form body with the business ones: proxies, gateways
        and access logs record URLs, not bodies (docs/top-api.md#http-request). The gateway reads
        both alike and the signature covers both. Empty values are neither sent nor signed."""
        system = {
            "method": method,
            "app_key": self.app_key,
            # On Taobao's clock when ours is known to be off: TOP refuses over 10 minutes (code 31).
            "timestamp": format_top_time(self.clock_skew.taobao_now(datetime.now(UTC))),
            "v": "2.0",
            "format": "json",
            "sign_method": self.sign_method,
            "partner_id": self.partner_id or "",
        }
        query = {k: v for k, v in system.items() if v != ""}
        form = {k: rendered for k, v in params.items() if (rendered := render_param(v)) != ""}
        if session:
            form["session"] = session
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
