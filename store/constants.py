"""Names the database schema, the service and the ERP agree on, in one place
(docs/design.md#sql-in-one-place)."""

from __future__ import annotations

from typing import Final

# NOTIFY channel (docs/design.md#public-contract; `NOTIFY_CHANNEL` overrides it).
DEFAULT_NOTIFY_CHANNEL: Final = "trade_changed"

TRADES: Final = "trades"
TRADE_ORDERS: Final = "trade_orders"
TRADE_CHANGES: Final = "trade_changes"
FEED_COUNTER: Final = "feed_counter"
DEAD_LETTERS: Final = "dead_letters"
SCHEMA_MIGRATIONS: Final = "schema_migrations"

# Every connection the service opens speaks UTC, so NOTIFY payload times read the same on every replica,
# and names itself alike, so operators see all of a daemon's connections together.
SERVER_SETTINGS: Final = {"timezone": "UTC", "application_name": "order-sync"}

# pg_advisory_lock key that serialises `migrate` across replicas: the first 8 bytes of
# sha256("taobao-order-sync:migrate") as a signed int64. Fixed so every release agrees on it.
MIGRATION_LOCK_KEY: Final = 0x5B2C509EA5FEF976

# What the NOTIFY payload may carry of each text field. PostgreSQL refuses payloads of 8000 bytes or
# more; 4 bytes per character at most keeps the whole payload under 2 kB whatever the data.
PAYLOAD_TEXT_LIMIT: Final = 200
NOTIFY_PAYLOAD_LIMIT: Final = 8000

# numeric(14,2) holds amounts below 10**12 yuan.
MONEY_DIGITS: Final = 12
INT32_MAX: Final = 2**31 - 1
