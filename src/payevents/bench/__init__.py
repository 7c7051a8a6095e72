"""Benchmarks: ``payevents bench …`` prints figures; tests assert behaviour, never speed."""
