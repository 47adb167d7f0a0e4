"""Headless Chromium driven over the DevTools protocol (a WebSocket; aiohttp's client speaks it), so a
test can see a page as a person does: what text it shows, which font drew it, and a screenshot.

Started with the flags a locked-down CI machine needs (no sandbox as root, no GPU, no network of its
own beyond the page: no QUIC, no first-run or background fetches, no component updates, no sync) and a
fresh profile in a directory the caller owns.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

import aiohttp

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Tab:
    """One page target, attached with a flat session: commands go over the browser's one socket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, session: str | None = None) -> None:
        self._ws = ws
        self._session = session
        self._ids = itertools.count(1)
        self._events: list[dict[str, Any]] = []

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if self._session is not None:
            message["sessionId"] = self._session
        await self._ws.send_str(json.dumps(message))
        while True:
            reply = await self._ws.receive_json()
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self._events.append(reply)

    async def wait_event(self, method: str, within: float = 30.0) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while True:
                for event in self._events:
                    if event.get("method") == method:
                        self._events.remove(event)
                        return event
                self._events.append(await self._ws.receive_json())

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise awaited; returned by value, so
        JSON-shaped)."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, clip: dict[str, float] | None = None) -> bytes:
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": True}
        if clip is not None:
            params["clip"] = clip | {"scale": 1}
        shot = await self.send("Page.captureScreenshot", **params)
        return base64.b64decode(shot["data"])

    async def fonts_of(self, selector: str) -> list[str]:
        """The platform fonts that drew the text of the first element `selector` matches."""
        await self.send("DOM.enable")
        await self.send("CSS.enable")
        root = await self.send("DOM.getDocument")
        node = await self.send("DOM.querySelector", nodeId=root["root"]["nodeId"], selector=selector)
        used = await self.send("CSS.getPlatformFontsForNode", nodeId=node["nodeId"])
        return [font["familyName"] for font in used["fonts"]]


@contextlib.asynccontextmanager
async def browser(binary: str, profile: Path, *, width: int = 1320, height: int = 1400) -> AsyncIterator[Tab]:
    """A headless Chromium with a fresh profile in `profile`; yields a Tab on about:blank."""
    log = _fresh_profile(profile)
    process = await asyncio.create_subprocess_exec(
        binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
        f"--window-size={width},{height}", "about:blank",
        stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
    )  # fmt: skip
    try:
        endpoint = await _devtools_endpoint(profile, process)
        async with aiohttp.ClientSession() as http, http.ws_connect(endpoint, max_msg_size=0) as ws:
            root = Tab(ws)
            targets = await root.send("Target.getTargets")
            page_id = next(t["targetId"] for t in targets["targetInfos"] if t["type"] == "page")
            attached = await root.send("Target.attachToTarget", targetId=page_id, flatten=True)
            tab = Tab(ws, attached["sessionId"])
            await tab.send("Page.enable")
            await tab.send("Runtime.enable")
            yield tab
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
        log.close()


def _fresh_profile(profile: Path) -> IO[bytes]:
    """Create the profile's directory; the browser's log beside it, open for writing."""
    profile.mkdir(parents=True, exist_ok=True)
    return (profile.parent / "chromium.log").open("wb")


async def _devtools_endpoint(profile: Path, process: asyncio.subprocess.Process) -> str:
    """Chromium writes the port it chose and the browser's path to DevToolsActivePort when it is up."""
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while True:
        lines = marker.read_text().split("\n") if marker.exists() else []
        if len(lines) >= 2 and lines[0].strip() and lines[1].strip():
            return f"ws://127.0.0.1:{lines[0].strip()}{lines[1].strip()}"
        if process.returncode is not None or time.monotonic() > deadline:
            log = (profile.parent / "chromium.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"chromium did not start its DevTools endpoint\n{log}")
        await asyncio.sleep(0.05)


async def open_page(tab: Tab, url: str) -> None:
    """Navigate and wait until the page has loaded (fonts included: text is measured after them)."""
    await tab.send("Page.navigate", url=url)
    await tab.wait_event("Page.loadEventFired")
    await tab.evaluate("document.fonts.ready.then(() => true)")


def decode_png(data: bytes) -> list[list[tuple[int, int, int]]]:
    """Rows of RGB pixels of an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium's screenshots are)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, chunks, header = 8, [], b""
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height = int.from_bytes(header[0:4], "big"), int.from_bytes(header[4:8], "big")
    depth, colour, interlace = header[8], header[9], header[12]
    assert (depth, interlace) == (8, 0), f"unexpected PNG shape {header!r}"
    assert colour in (2, 6), f"unexpected PNG colour type {colour}"
    step = 4 if colour == 6 else 3
    raw = zlib.decompress(b"".join(chunks))
    stride = width * step
    rows: list[list[tuple[int, int, int]]] = []
    previous = bytearray(stride)
    for y in range(height):
        method, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - step] if i >= step else 0
            up, corner = previous[i], previous[i - step] if i >= step else 0
            if method == 1:
                line[i] = (line[i] + left) & 0xFF
            elif method == 2:
                line[i] = (line[i] + up) & 0xFF
            elif method == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif method == 4:
                guess = left + up - corner
                near = min(
                    (abs(guess - left), 0, left), (abs(guess - up), 1, up), (abs(guess - corner), 2, corner)
                )
                line[i] = (line[i] + near[2]) & 0xFF
        rows.append([(line[x], line[x + 1], line[x + 2]) for x in range(0, stride, step)])
        previous = line
    return rows


def ink(rows: list[list[tuple[int, int, int]]], threshold: int = 128) -> frozenset[tuple[int, int]]:
    """The dark pixels of a glyph's picture, moved to its own top-left corner: the shape a reader sees,
    wherever on the line (and at whatever subpixel offset, near enough) it was drawn."""
    dark = {
        (x, y) for y, row in enumerate(rows) for x, (r, g, b) in enumerate(row) if (r + g + b) / 3 < threshold
    }
    if not dark:
        return frozenset()
    left, top = min(x for x, _ in dark), min(y for _, y in dark)
    return frozenset((x - left, y - top) for x, y in dark)
