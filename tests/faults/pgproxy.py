"""A TCP proxy with fault knobs, put between the service and PostgreSQL to make the database path fail
the way networks do rather than the way `pg_terminate_backend` does.

    async with PgProxy("127.0.0.1", 5432) as proxy:
        dsn = proxy.dsn_for("mydb")      # connect through the proxy
        proxy.stall()                    # blackhole: sockets stay open, no byte moves either way
        proxy.resume()                   # held bytes flow again (TCP retransmits after a short outage)
        proxy.cut()                      # every connection reset (RST), on both sides
        proxy.delay(0.2)                 # each chunk forwarded 0.2 s late
        proxy.refuse_new(True)           # new connections are reset as soon as they are accepted

`stall()` also holds connections made during the stall (their startup never gets an answer), as a
blackholed address does. `links` gives each connection's own `stall()`/`resume()`/`cut()`, for faults
that hit some connections only (an old primary's connections after a failover), and the local port of
its upstream socket, which PostgreSQL shows as `pg_stat_activity.client_port`.

Another process drives it with `python -m tests.faults.pgproxy --upstream HOST:PORT`: the proxy prints
`{"host": ..., "port": ...}` as one line, then reads one command a line on stdin: `stall`, `stall open`
(only the connections open now), `resume`, `cut`, `delay SECONDS`, `refuse on|off`, `stats`. It
answers each with one JSON line holding `ok`, the counters and the open connections, and exits when
stdin closes, so it never outlives whoever started it. `ProxyProcess` is that driver.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import socket
import struct
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

CHUNK = 64 * 1024
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ProxyStats:
    connections: int = 0  # accepted and linked to the upstream
    refused: int = 0  # reset at once: refuse_new, or the upstream could not be reached
    resets: int = 0  # links ended by cut()
    bytes_up: int = 0  # client → upstream
    bytes_down: int = 0  # upstream → client


def dsn_at(host: str, port: int, database: str, user: str) -> str:
    return f"postgresql://{user}@{host}:{port}/{database}"


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN: SO_LINGER on with a zero timeout, then abort."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Link:
    """One proxied connection: the client's socket and the proxy's own socket to the upstream."""

    def __init__(
        self,
        proxy: PgProxy,
        number: int,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.number = number
        self.bytes_up = 0
        self.bytes_down = 0
        self._proxy = proxy
        self._client = client
        self._upstream = upstream
        self._flowing = asyncio.Event()
        self._stalled = False
        self._pumps: list[asyncio.Task[None]] = []
        self.upstream_port: int = upstream[1].get_extra_info("sockname")[1]
        self._refresh()

    @property
    def stalled(self) -> bool:
        return self._stalled or self._proxy.stalled

    def stall(self) -> None:
        """Stop forwarding on this link only; its sockets stay open."""
        self._stalled = True
        self._refresh()

    def resume(self) -> None:
        """Let this link flow again (unless the whole proxy is stalled)."""
        self._stalled = False
        self._refresh()

    def cut(self) -> None:
        """Reset both sockets; whatever was held is lost."""
        self._proxy.stats.resets += 1
        for task in self._pumps:
            task.cancel()
        _reset(self._client[1])
        _reset(self._upstream[1])

    def _refresh(self) -> None:
        if self.stalled:
            self._flowing.clear()
        else:
            self._flowing.set()

    async def run(self) -> None:
        self._pumps = [
            asyncio.create_task(self._pump(self._client[0], self._upstream[1], up=True)),
            asyncio.create_task(self._pump(self._upstream[0], self._client[1], up=False)),
        ]
        try:
            await asyncio.gather(*self._pumps, return_exceptions=True)
        finally:
            for _, writer in (self._client, self._upstream):
                writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        try:
            while data := await reader.read(CHUNK):
                if self._proxy.latency > 0:
                    await asyncio.sleep(self._proxy.latency)  # the latency being simulated
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
                self._count(len(data), up=up)
        except (ConnectionError, OSError):
            # Either side reset or broke: the link is dead. Held like the bytes before it while stalled.
            await self._flowing.wait()
            _reset(self._client[1])
            _reset(self._upstream[1])
            return
        await self._flowing.wait()  # an orderly end (FIN) too is held during a stall
        if writer.can_write_eof():
            with contextlib.suppress(OSError):
                writer.write_eof()

    def _count(self, size: int, *, up: bool) -> None:
        stats = self._proxy.stats
        if up:
            self.bytes_up += size
            stats.bytes_up += size
        else:
            self.bytes_down += size
            stats.bytes_down += size


class PgProxy:
    """Listens on `host`:`port` (0: any free port) and forwards every connection to the upstream."""

    def __init__(
        self, upstream_host: str, upstream_port: int, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = port
        self.stats = ProxyStats()
        self.stalled = False
        self.latency = 0.0
        self.refusing = False
        self._links: dict[int, Link] = {}
        self._numbers = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        """Stop listening and reset every connection."""
        if self._server is not None:
            self._server.close()
        self.cut()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> PgProxy:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def dsn_for(self, database: str, user: str = "postgres") -> str:
        return dsn_at(self.host, self.port, database, user)

    @property
    def links(self) -> list[Link]:
        """The connections open now, oldest first."""
        return list(self._links.values())

    # -- knobs ---------------------------------------------------------------------------------------

    def stall(self) -> None:
        """Stop forwarding in both directions, on every connection and on new ones; sockets stay open."""
        self.stalled = True
        for link in self._links.values():
            link._refresh()

    def resume(self) -> None:
        """Forward again, on every connection, including those stalled one by one."""
        self.stalled = False
        for link in self._links.values():
            link.resume()

    def cut(self) -> int:
        """Reset every connection (RST to the client and to the upstream); returns how many."""
        links = list(self._links.values())
        for link in links:
            link.cut()
        return len(links)

    def delay(self, seconds: float) -> None:
        """Forward each chunk `seconds` late (0: no added latency)."""
        if seconds < 0:
            raise ValueError("delay must not be negative")
        self.latency = seconds

    def refuse_new(self, refuse: bool = True) -> None:
        """Reset new connections as soon as they are accepted; open ones are left alone."""
        self.refusing = refuse

    def snapshot(self) -> dict[str, Any]:
        """The counters and knobs, and each open connection (for the stdin channel's answers)."""
        return asdict(self.stats) | {
            "active": len(self._links),
            "stalled": self.stalled,
            "delay": self.latency,
            "refusing": self.refusing,
            "links": [
                {"number": link.number, "upstream_port": link.upstream_port, "stalled": link.stalled}
                for link in self._links.values()
            ],
        }

    # -- connections ---------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._handlers.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            self.stats.refused += 1
            _reset(writer)
            return
        try:
            upstream = await asyncio.open_connection(*self.upstream)
        except OSError:
            self.stats.refused += 1
            _reset(writer)
            return
        number = next(self._numbers)
        link = Link(self, number, (reader, writer), upstream)
        self._links[number] = link
        self.stats.connections += 1
        try:
            await link.run()
        finally:
            del self._links[number]


# -- another process ---------------------------------------------------------------------------------


def apply_command(proxy: PgProxy, line: str) -> dict[str, Any]:
    """One command of the stdin channel; the answer to print."""
    words = line.split()
    try:
        match words:
            case ["stall"]:
                proxy.stall()
            case ["stall", "open"]:
                for link in proxy.links:
                    link.stall()
            case ["resume"]:
                proxy.resume()
            case ["cut"]:
                proxy.cut()
            case ["delay", seconds]:
                proxy.delay(float(seconds))
            case ["refuse", ("on" | "off") as flag]:
                proxy.refuse_new(flag == "on")
            case ["stats"]:
                pass
            case _:
                raise ValueError(f"unknown command {line.strip()!r}")
    except ValueError as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True, **proxy.snapshot()}


async def serve_stdin(upstream: tuple[str, int], host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    async with PgProxy(*upstream, host=host, port=port) as proxy:
        print(json.dumps({"host": proxy.host, "port": proxy.port}), flush=True)
        while line := await commands.readline():
            if line.strip():
                print(json.dumps(apply_command(proxy, line.decode())), flush=True)


class ProxyProcess:
    """`python -m tests.faults.pgproxy` as a child process, driven over its stdin."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = ""
        self.port = 0
        self._process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> ProxyProcess:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.faults.pgproxy",
            "--upstream",
            f"{self.upstream[0]}:{self.upstream[1]}",
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        address = await self._read()
        self.host, self.port = str(address["host"]), int(address["port"])
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def dsn_for(self, database: str, user: str = "postgres") -> str:
        return dsn_at(self.host, self.port, database, user)

    async def command(self, line: str) -> dict[str, Any]:
        """Send one command; its answer (raises if the proxy refused it)."""
        process = self._running()
        assert process.stdin is not None
        process.stdin.write(line.encode() + b"\n")
        await process.stdin.drain()
        answer = await self._read()
        if not answer.get("ok"):
            raise ValueError(answer.get("error", answer))
        return answer

    async def close(self, within: float = 10.0) -> int:
        """Close its stdin (it stops and exits); its exit code."""
        process = self._running()
        assert process.stdin is not None
        process.stdin.close()
        async with asyncio.timeout(within):
            return await process.wait()

    def _running(self) -> asyncio.subprocess.Process:
        if self._process is None:
            raise RuntimeError("the proxy process was not started")
        return self._process

    async def _read(self) -> dict[str, Any]:
        stdout = self._running().stdout
        assert stdout is not None
        line = await stdout.readline()
        if not line:
            raise RuntimeError("the proxy process ended")
        answer: dict[str, Any] = json.loads(line)
        return answer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.faults.pgproxy", description="A TCP proxy with fault knobs driven over stdin."
    )
    parser.add_argument("--upstream", required=True, help="HOST:PORT to forward to, e.g. 127.0.0.1:5432")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed on stdout)")
    args = parser.parse_args(argv)
    upstream_host, _, upstream_port = args.upstream.rpartition(":")
    asyncio.run(serve_stdin((upstream_host, int(upstream_port)), args.host, args.port))


if __name__ == "__main__":
    main()
