"""Helpers of the transport tests."""

from __future__ import annotations

import time

from payevents.transport import Consumer, Message


def drain(consumer: Consumer, expected: int, *, timeout: float = 30.0, settle: float = 0.3) -> list[Message]:
    """Poll until ``expected`` messages arrived (or ``timeout``), then ``settle`` seconds more to catch extras."""
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(out) < expected and time.monotonic() < deadline:
        out.extend(consumer.poll(500, 0.2))
    end = time.monotonic() + settle
    while time.monotonic() < end:
        out.extend(consumer.poll(500, 0.05))
    return out


def wait_assigned(consumer: Consumer, count: int, *, timeout: float = 30.0) -> set[tuple[str, int]]:
    """Poll (without consuming anything: only before records exist) until ``count`` partitions are assigned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(consumer.assignment()) >= count:
            return consumer.assignment()
        got = consumer.poll(10, 0.1)
        assert not got, "wait_assigned must run before records are produced"
    raise AssertionError(f"only {consumer.assignment()} assigned after {timeout}s, expected {count} partitions")


def next_offsets(messages: list[Message]) -> dict[tuple[str, int], int]:
    """The offsets to commit after processing ``messages``: last offset + 1 per partition."""
    out: dict[tuple[str, int], int] = {}
    for m in messages:
        out[(m.topic, m.partition)] = max(out.get((m.topic, m.partition), 0), m.offset + 1)
    return out
