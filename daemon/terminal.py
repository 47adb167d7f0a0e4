"""A status line and log records on one terminal (the demo's progress, `order-sync backfill`'s).

A status line is rewritten in place with `\\r`; a log record written in between would be glued to its
end and the next update would overwrite half of it. Here both go through one `Terminal`: a record
clears the status line, takes a line of its own above it, and the status line is drawn again below.
Off a terminal nothing is rewritten: status updates and records are written as plain lines.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TextIO, cast

CLEAR = "\r\x1b[K"  # back to the line's start, erase to its end


class _Stream(io.TextIOBase):
    """A writable text stream whose writes go to `sink`; `isatty` as the terminal's."""

    def __init__(self, sink: Callable[[str], None], terminal: Terminal) -> None:
        self._sink = sink
        self._terminal = terminal

    def write(self, text: str) -> int:
        self._sink(text)
        return len(text)

    def isatty(self) -> bool:
        return self._terminal.tty

    def flush(self) -> None:
        self._terminal.out.flush()


class Terminal:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._status = ""
        self._pending = ""
        # `status` takes what a progress line writes: "\r" + the line to show, "\n" to end it.
        self.status = cast(TextIO, _Stream(self._on_status, self))
        # `log` takes whole lines (a logging handler's stream).
        self.log = cast(TextIO, _Stream(self._on_log, self))

    def show(self, line: str) -> None:
        """Show `line` as the status line (off a terminal: print it)."""
        if self.tty:
            self._status = line.rstrip()
            self.out.write(CLEAR + self._status)
        else:
            self.out.write(line.rstrip() + "\n")
        self.out.flush()

    def end(self) -> None:
        """Leave the status line as it is and move below it."""
        if self.tty and self._status:
            self.out.write("\n")
            self.out.flush()
        self._status = ""

    def _on_status(self, text: str) -> None:
        if text == "\n":
            self.end()
        elif text.startswith("\r"):
            self.show(text[1:])
        elif text.strip():
            self.show(text)

    def _on_log(self, text: str) -> None:
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            if self.tty and self._status:
                self.out.write(f"{CLEAR}{line}\n{self._status}")
            else:
                self.out.write(line + "\n")
        self.out.flush()
