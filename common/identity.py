"""How a running process names itself to the others (gap reports, replica rows, partner_id)."""

from __future__ import annotations

import os
import socket


def default_replica() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
