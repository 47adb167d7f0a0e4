"""Text from outside, made safe for a column or a log line (docs/design.md#bad-input-never-crashes).

Two strengths, one place:

* `storable` replaces what PostgreSQL's text and jsonb cannot hold (U+0000 and lone surrogates) with
  U+FFFD and nothing else: a trade's own data, where every other character is the buyer's
  (docs/design.md#text-replaced).
* `sanitize` is for the short texts the service only reports (TMC close reasons and status phrases,
  TOP's `msg`/`sub_msg`, TMC topics and nicks, decode errors naming a frame's keys): also every other
  control character but tab, and a length cap, so one hostile string cannot break a log line or fill a
  column.
"""

from __future__ import annotations

import re
from typing import Final

REPLACEMENT: Final = "\ufffd"
UNSTORABLE: Final = re.compile("[\x00\ud800-\udfff]")
# C0 controls but tab, DEL, C1 controls, and what PostgreSQL cannot store.
_UNSAFE: Final = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")
# Long enough for any reason a server writes, short enough for one log line.
TEXT_LIMIT: Final = 512


def storable(text: str) -> str:
    """`text` with NUL and lone surrogates replaced by U+FFFD."""
    return UNSTORABLE.sub(REPLACEMENT, text)


def sanitize(text: str, *, limit: int = TEXT_LIMIT) -> str:
    """`text` with control characters and unstorable code points replaced by U+FFFD, cut to `limit`
    characters (an ellipsis marks the cut)."""
    clean = _UNSAFE.sub(REPLACEMENT, text)
    if len(clean) > limit:
        return clean[: max(0, limit - 1)] + "…"
    return clean


def sanitize_optional(text: str | None, *, limit: int = TEXT_LIMIT) -> str | None:
    return None if text is None else sanitize(text, limit=limit)
