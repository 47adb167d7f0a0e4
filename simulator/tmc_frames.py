"""Frame-level oddities of the stand-in TMC server, written over bytes the codec already encoded, so the
codec itself stays the strict one clients use.

A v2 frame ends with the int16 EndOfHeaders (0); headers may come in any order, so an extra header is
spliced in just before it.
"""

from __future__ import annotations

import struct

UNKNOWN_HEADER_KINDS = ("value_format", "header_type")
# The next codes after the ones the protocol defines (ByteArray = 7; Token = 5): what a newer server
# would most likely pick.
UNKNOWN_VALUE_FORMAT = 8
UNKNOWN_HEADER_TYPE = 6
_CUSTOM = 1
_END_OF_HEADERS = b"\x00\x00"


def _counted(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<i", len(raw)) + raw


def with_unknown_header(frame: bytes, kind: str, key: str, value: str) -> bytes:
    """`frame` with one header this protocol version does not define (see TmcFaults)."""
    if not frame.endswith(_END_OF_HEADERS):
        raise ValueError("not an encoded v2 frame: it must end with EndOfHeaders")
    if kind == "value_format":
        extra = struct.pack("<h", _CUSTOM) + _counted(key) + bytes((UNKNOWN_VALUE_FORMAT,)) + _counted(value)
    elif kind == "header_type":
        extra = struct.pack("<h", UNKNOWN_HEADER_TYPE) + _counted(value)
    else:
        raise ValueError(f"unknown header kind {kind!r}; known: {list(UNKNOWN_HEADER_KINDS)}")
    return frame[:-2] + extra + _END_OF_HEADERS
