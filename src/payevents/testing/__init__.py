"""Helpers shared by the test suite and the benchmarks (starting real components)."""
