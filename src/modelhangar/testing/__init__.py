"""Helpers for tests and benchmarks (small model files)."""
