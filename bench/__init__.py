"""Benchmarks that print figures (never asserted in CI as timings)."""
