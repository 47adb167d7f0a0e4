"""The TMC push listener: codec, session, dispatcher, worker pool and the daemon's entry point."""
