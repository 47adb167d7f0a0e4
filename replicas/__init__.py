"""Several replicas on one database: heartbeats, shop leadership, the TOP quota share."""
