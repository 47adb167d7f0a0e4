"""A status line and log records on one terminal: a record never lands inside the status line."""

from __future__ import annotations

import io
import logging

from daemon.logs import configure_logging
from daemon.terminal import CLEAR, Terminal


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_record_takes_a_line_above_the_status_line_which_is_drawn_again() -> None:
    screen = FakeTerminal()
    terminal = Terminal(screen)
    handler = configure_logging("WARNING", "json", stream=terminal.log)
    try:
        terminal.status.write("\rmarket changes 10 · applied 9")
        logging.getLogger("listener.session").warning("TMC connect failed", extra={"action": "tmc_refused"})
        terminal.show("market changes 20 · applied 20")
        terminal.end()
    finally:
        logging.getLogger().removeHandler(handler)
    first, record, rest = screen.getvalue().split(CLEAR, 3)[1:]
    assert first == "market changes 10 · applied 9"
    line, redrawn = record.split("\n")
    assert '"action": "tmc_refused"' in line
    assert redrawn == "market changes 10 · applied 9"  # the status line comes back below the record
    assert rest == "market changes 20 · applied 20\n"


def test_off_a_terminal_status_updates_and_records_are_plain_lines() -> None:
    out = io.StringIO()
    terminal = Terminal(out)
    terminal.status.write("\rwindow 1/3")
    terminal.log.write("a record\n")
    terminal.show("window 3/3")
    terminal.end()
    assert out.getvalue() == "window 1/3\na record\nwindow 3/3\n"
    assert not terminal.status.isatty()
