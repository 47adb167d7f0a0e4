"""What every layer above may use: the error root, backoff, the metrics registry, health checks."""
