#!/usr/bin/env node
// Follows the order-sync change feed from Node.js, exactly once (the README's "ERP contract").
//
//   npm ci && DATABASE_URL=postgresql://erp@db/orders node consumer.js [--name erp] [--channel trade_changed]
//     [--schema order_sync]   (the service's DATABASE_SCHEMA, where the feed is; default order_sync)
//
// How it stays exact:
// * The feed table `trade_changes` is the truth; NOTIFY only rings the bell. LISTEN runs on a dedicated
//   client (never a pooled one: a pool's reset would UNLISTEN), and is issued BEFORE the catch-up, so a
//   change committed in between still rings.
// * Each batch is one transaction: lock this consumer's row in `erp_cursor` (the ERP's own table),
//   read `position > cursor`, apply the batch with the ERP's own writes, move the cursor, COMMIT. A crash
//   or a lost connection anywhere before COMMIT rolls back the writes and the cursor together.
// * `tid` and `position` are 64-bit: they arrive as BigInt and never pass through a JS number (a double
//   keeps 53 bits; real tids are 19 digits). Timestamps stay PostgreSQL's text.
// * A dropped connection is noticed at once (the client's 'error'/'end'); after IDLE_PROBE_MS of silence
//   a `SELECT 1` probes a connection that may have died without a word. Reconnects back off
//   exponentially with jitter; the backoff resets only after a connection stayed up STABLE_AFTER_MS.
//
// apply() below records each change in `erp_trade_events`, an inbox the ERP works through; replace it
// with the ERP's own writes on the same client. The JSON lines on stdout are printed after COMMIT.
import pg from 'pg';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const INT8 = 20;
const TIMESTAMPTZ = 1184;

export const CREATE_TABLES = `
CREATE TABLE IF NOT EXISTS erp_cursor (
    consumer    text PRIMARY KEY,
    position    bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS erp_trade_events (
    consumer    text NOT NULL,
    position    bigint NOT NULL,
    tid         bigint NOT NULL,
    status      text,
    modified    timestamptz NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)`;
const ENSURE_CURSOR = `INSERT INTO erp_cursor (consumer, position) VALUES ($1, 0) ON CONFLICT (consumer) DO NOTHING`;
const LOCK_CURSOR = `SELECT position FROM erp_cursor WHERE consumer = $1 FOR UPDATE`;
// The README's catch-up query, on the feed in the service's schema (the ERP's own tables above go where
// the ERP role's search_path puts them).
const catchUp = (schema) => `
SELECT position, tid, seller_nick, status, modified, source, kind, committed_at
FROM ${schema}.trade_changes
WHERE position > $1
ORDER BY position
LIMIT $2`;
const SAVE_CURSOR = `UPDATE erp_cursor SET position = $2, updated_at = now() WHERE consumer = $1`;

// bigint → BigInt, timestamptz → its text; everything else as node-postgres parses it.
const types = {
  getTypeParser(oid, format) {
    if (oid === INT8) return (text) => BigInt(text);
    if (oid === TIMESTAMPTZ) return (text) => text;
    return pg.types.getTypeParser(oid, format);
  },
};

/** The ERP's writes for one batch, inside the batch's transaction. */
export async function apply(client, name, changes) {
  for (const c of changes) {
    await client.query(
      'INSERT INTO erp_trade_events (consumer, position, tid, status, modified) VALUES ($1, $2, $3, $4, $5)',
      [name, c.position, c.tid, c.status, c.modified], // BigInt parameters go out as their exact digits
    );
  }
}

/** One change as a JSON line, 64-bit numbers written as exact JSON numbers. */
export function toJsonLine(c) {
  const rest = JSON.stringify({
    seller_nick: c.seller_nick, status: c.status, modified: c.modified, source: c.source, kind: c.kind,
  });
  return `{"position":${c.position},"tid":${c.tid},${rest.slice(1)}`;
}

const log = (action, message, extra = {}) =>
  process.stderr.write(JSON.stringify({ ts: new Date().toISOString(), action, msg: message, ...extra }) + '\n');

export class Consumer {
  constructor({ connectionString, channel = 'trade_changed', schema = 'order_sync', name = 'erp-node', batchSize = 500,
                idleProbeMs = 30_000, probeTimeoutMs = 5_000, backoffInitialMs = 500,
                backoffMaxMs = 30_000, stableAfterMs = 30_000, onCommitted = () => {} }) {
    Object.assign(this, { connectionString, channel, name, batchSize, idleProbeMs, probeTimeoutMs,
                          backoffInitialMs, backoffMaxMs, stableAfterMs, onCommitted });
    if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) throw new Error(`schema must be a lower-case identifier: ${schema}`);
    this.catchUp = catchUp(schema);
    this.cursor = 0n;
    this.connections = 0;
    this.stopping = false;
    this.wake = () => {};
  }

  stop() {
    this.stopping = true;
    this.wake();
  }

  async run() {
    let delay = this.backoffInitialMs;
    while (!this.stopping) {
      const started = Date.now();
      try {
        await this.session();
      } catch (err) {
        log('erp_connection_lost', String(err?.message ?? err), { attempt: this.connections });
      }
      if (this.stopping) break;
      if (Date.now() - started >= this.stableAfterMs) delay = this.backoffInitialMs;
      const pause = delay * (0.5 + Math.random() / 2);
      delay = Math.min(delay * 2, this.backoffMaxMs);
      await this.sleep(pause);
    }
  }

  /** Resolves after `ms`, or at once when woken (a doorbell, a lost connection, stop()). */
  sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      this.wake = () => { clearTimeout(timer); resolve(true); };
    });
  }

  async session() {
    const client = new pg.Client({
      connectionString: this.connectionString, types, application_name: `erp-consumer:${this.name}`,
      query_timeout: Math.max(this.probeTimeoutMs, 60_000),
    });
    let doorbell = true; // catch up once after every (re)connect
    let lost = null;
    client.on('notification', () => { doorbell = true; this.wake(); });
    client.on('error', (err) => { lost = err; this.wake(); });
    client.on('end', () => { lost ??= new Error('the server closed the connection'); this.wake(); });
    await client.connect();
    try {
      await client.query(CREATE_TABLES);
      await client.query(ENSURE_CURSOR, [this.name]);
      await client.query(`LISTEN ${client.escapeIdentifier(this.channel)}`); // LISTEN first, then catch up
      this.connections += 1;
      log('erp_connected', 'following the feed', { attempt: this.connections });
      while (!this.stopping) {
        if (lost) throw lost;
        if (doorbell) {
          doorbell = false;
          await this.drain(client);
          continue;
        }
        const woken = await this.sleep(this.idleProbeMs);
        if (!woken && !this.stopping) {
          await client.query({ text: 'SELECT 1', query_timeout: this.probeTimeoutMs });
        }
      }
    } finally {
      client.removeAllListeners('end');
      client.on('error', () => {}); // a late error on a client being closed is no news
      await client.end().catch(() => {});
    }
  }

  /** Catch up from the saved cursor, one transaction per batch, until a batch comes back short. */
  async drain(client) {
    for (;;) {
      let changes;
      await client.query('BEGIN');
      try {
        const { rows: [row] } = await client.query(LOCK_CURSOR, [this.name]);
        ({ rows: changes } = await client.query(this.catchUp, [row.position, this.batchSize]));
        if (changes.length > 0) {
          await apply(client, this.name, changes);
          await client.query(SAVE_CURSOR, [this.name, changes.at(-1).position]);
        }
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {});
        throw err;
      }
      if (changes.length > 0) {
        this.cursor = changes.at(-1).position;
        this.onCommitted(changes);
      }
      if (changes.length < this.batchSize || this.stopping) return;
    }
  }
}

async function main() {
  const { values } = parseArgs({
    options: {
      'database-url': { type: 'string', default: process.env.DATABASE_URL },
      channel: { type: 'string', default: process.env.NOTIFY_CHANNEL ?? 'trade_changed' },
      schema: { type: 'string', default: process.env.DATABASE_SCHEMA ?? 'order_sync' },
      name: { type: 'string', default: 'erp-node' },
      'batch-size': { type: 'string', default: '500' },
    },
  });
  if (!values['database-url']) {
    process.stderr.write('give --database-url or set DATABASE_URL\n');
    process.exit(2);
  }
  const consumer = new Consumer({
    connectionString: values['database-url'], channel: values.channel, schema: values.schema, name: values.name,
    batchSize: Number.parseInt(values['batch-size'], 10),
    onCommitted: (changes) => { for (const c of changes) process.stdout.write(toJsonLine(c) + '\n'); },
  });
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => consumer.stop());
  await consumer.run();
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err) => { log('erp_failed', String(err?.stack ?? err)); process.exit(1); });
}
