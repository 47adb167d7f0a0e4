"""The ERP contract as documentation text (`python -m store.contract` prints it as Markdown).

The feed query is taken from `store.sql`, so the README and the code cannot drift apart.
"""

from __future__ import annotations

import textwrap

from store import sql
from store.constants import DEFAULT_NOTIFY_CHANNEL, PAYLOAD_TEXT_LIMIT
from store.schema import DEFAULT_SCHEMA


def erp_contract_markdown() -> str:
    feed_query = textwrap.dedent(sql.READ_CHANGES).strip().replace("$1", "$cursor").replace("$2", "$limit")
    return f"""\
## The ERP contract: reading trades and following changes

**Tables** (PostgreSQL, in the service's schema, `{DEFAULT_SCHEMA}` unless `DATABASE_SCHEMA` says otherwise:
give the ERP's role `search_path = {DEFAULT_SCHEMA}, public` or qualify the names; all times
`timestamptz`, money `numeric(14,2)` yuan, ids `bigint`):

- `trades`: one row per trade, its current state. `tid` (primary key), `seller_nick`, `status`, `type`,
  `created`, `modified`, `pay_time`, `payment`, `buyer_nick`, …, and `raw` (`jsonb`, the whole
  `taobao.trade.fullinfo.get` object). `modified` never goes backwards.
- `trade_orders`: the sub-orders of each trade (`tid`, `oid`, `status`, `refund_status`, `title`, `num`,
  `price`, `payment`, …), replaced together with their trade.
- `trade_changes`: the change feed, one row per applied change: `position`, `tid`, `seller_nick`,
  `status`, `modified`, `source` (`stream`, `backfill`, …), `kind` (`created`/`updated`),
  `committed_at`.

**Positions** are dense (1, 2, 3, …) and become visible in commit order, so a reader that remembers
the last position it processed never skips a committed change, however many writers run at once.

**Catch-up query** (the truth; run it until it returns fewer than `$limit` rows):

```sql
{feed_query}
```

**Doorbell**: `LISTEN {DEFAULT_NOTIFY_CHANNEL};` (the service's `NOTIFY_CHANNEL` setting). One
notification per change, sent at commit, never after a rollback, payload JSON
`{{"position", "tid", "seller_nick", "status", "modified", "source"}}`: text fields cut to
{PAYLOAD_TEXT_LIMIT} characters, never the trade itself. `tid` is a 64-bit integer: parse it without
going through a double (JavaScript: a BigInt-aware JSON parser). Notifications are lost while you are
disconnected; the feed is not.

**Follow the feed like this** (`examples/erp_consumer.py` does all of it):

1. Keep your cursor in a table of your own, e.g.
   `CREATE TABLE erp_cursor (consumer text PRIMARY KEY, position bigint NOT NULL)`.
2. Open a dedicated connection (not a pooled one: returning it to a pool runs `UNLISTEN *`), run
   `LISTEN {DEFAULT_NOTIFY_CHANNEL}`, and only then run the catch-up query: a change committed in
   between still rings.
3. On every notification and after every (re)connect, run the catch-up query from your cursor. Apply
   each batch and `UPDATE erp_cursor SET position = <last position of the batch>` in ONE transaction:
   each change is then applied exactly once, across crashes and disconnects.
4. Probe an idle connection (`SELECT 1` after ~30 s of silence) and reconnect with backoff when it
   fails; then go to step 2.

The feed says *that* a trade changed; read its current state from `trades` (a trade that changed
twice since your cursor shows its newest state both times):
`SELECT c.position, t.* FROM trade_changes c JOIN trades t USING (tid) WHERE c.position > $cursor
ORDER BY c.position LIMIT $limit`.
"""


if __name__ == "__main__":
    print(erp_contract_markdown())
