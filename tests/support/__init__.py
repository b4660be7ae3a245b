"""Shared helpers for the test suite and the benchmarks (real services on loopback)."""
