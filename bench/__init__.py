"""Benchmarks: `make bench` runs them against a private stack; results go to docs/benchmarks.md."""
