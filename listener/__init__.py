"""The TMC push listener: the session (connect, sign, pull, confirm, reconnect), the dispatcher (per-tid
coalescing, bounded memory), the fetch workers and the commit batcher (confirm after commit)."""
