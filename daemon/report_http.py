"""`/reports` and `/reports.json` on the daemon's HTTP port: the gap reports `order-sync report` shows,
for on-call who cannot (or should not have to) exec into the container. Read-only: each request reads
the database (`daemon.report_data`) and formats it with the same view (`reconciler.report_view`).

`?last=N` (1..500, default 20) and `?shop=NICK` select as `--last` and `--shop` do. Nothing secret
reaches either page: reports hold shop nicks, counts, times and reasons, never a session; everything
from outside is HTML-escaped, the page runs no script and loads nothing (its Content-Security-Policy
says so to the browser too).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from urllib.parse import urlencode

import asyncpg
from aiohttp import web

from common.errors import OrderSyncError
from daemon.report_data import MAX_LAST, ReportQuery, load
from reconciler.report_page import page
from reconciler.report_view import ReportData, to_json
from store.errors import DATABASE_ERRORS

log = logging.getLogger(__name__)

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
SHOP_MAX = 200  # longer than any nick Taobao allows


class BadQuery(ValueError):
    pass


def parse_query(query: dict[str, str]) -> ReportQuery:
    text = query.get("last", "20").strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_LAST:
        raise BadQuery(f"last must be a whole number from 1 to {MAX_LAST}")
    shop = query.get("shop", "").strip() or None
    if shop is not None and len(shop) > SHOP_MAX:
        raise BadQuery("shop is too long")
    return ReportQuery(int(text), shop)


def filters(data: ReportData, query: ReportQuery) -> str:
    """Links under the page's title: every shop, all shops, and the same selection as JSON."""

    def href(path: str, **params: object) -> str:
        kept = {k: v for k, v in params.items() if v is not None}
        return html.escape(path + ("?" + urlencode(kept) if kept else ""), quote=True)

    shops = data.shop_names() if query.shop is None else [query.shop]
    links = [
        f'<a href="{href("reports", last=query.last, shop=shop)}">{html.escape(shop)}</a>' for shop in shops
    ]
    if query.shop is not None:
        links.append(f'<a href="{href("reports", last=query.last)}">all shops</a>')
    links.append(f'<a href="{href("reports.json", last=query.last, shop=query.shop)}">JSON</a>')
    return "<p>" + " · ".join(links) + "</p>"


def report_routes(pool: asyncpg.Pool, *, safety_lag_seconds: float) -> Callable[[web.Application], None]:
    """What adds the two routes to the daemon's HTTP application."""

    async def read(request: web.Request) -> tuple[ReportQuery, ReportData] | web.Response:
        try:
            query = parse_query(dict(request.query))
        except BadQuery as exc:
            return web.Response(text=f"{exc}\n", status=400, headers=HEADERS)
        try:
            return query, await load(pool, query, safety_lag_seconds=safety_lag_seconds)
        except (OrderSyncError, *DATABASE_ERRORS) as exc:
            # The type only: driver messages can quote the DSN's user and database.
            log.warning(
                "gap reports could not be read: %s", type(exc).__name__, extra={"action": "reports_failed"}
            )
            return web.Response(
                text=f"the gap reports could not be read from the database ({type(exc).__name__})\n",
                status=503,
                headers=HEADERS,
            )

    async def html_page(request: web.Request) -> web.Response:
        got = await read(request)
        if isinstance(got, web.Response):
            return got
        query, data = got
        body = page(data, links=filters(data, query))
        return web.Response(text=body, content_type="text/html", charset="utf-8", headers=HEADERS)

    async def json_page(request: web.Request) -> web.Response:
        got = await read(request)
        if isinstance(got, web.Response):
            return got
        return web.Response(
            text=to_json(got[1]) + "\n", content_type="application/json", charset="utf-8", headers=HEADERS
        )

    def add(app: web.Application) -> None:
        app.router.add_get("/reports", html_page)
        app.router.add_get("/reports.json", json_page)

    return add
