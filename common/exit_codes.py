"""The process exit codes of every command, in one place."""

from __future__ import annotations

from typing import Final

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1  # the command ran and failed (a check, a load, a stopped daemon)
EXIT_USAGE: Final = 2  # bad settings or arguments: nothing was started
EXIT_INTERRUPTED: Final = 130  # Ctrl-C (128 + SIGINT)
