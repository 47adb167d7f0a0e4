"""The service's one exception root: every error it raises on purpose derives from `OrderSyncError`,
so a caller that wants "any of ours" catches one class. Driver and library errors are wrapped with
`raise ... from exc` where they cross into our code."""

from __future__ import annotations


class OrderSyncError(Exception):
    """Base of every error the service raises on purpose."""
