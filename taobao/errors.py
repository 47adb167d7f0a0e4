"""The one exception root of the service (ARCHITECTURE.md invariant 6)."""


class OrderSyncError(Exception):
    """Base of every error the service raises on purpose."""
