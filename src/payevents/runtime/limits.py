"""The bounds of the numbers the workers and commands take, in one place (light: the CLI imports it).

Every integer a command takes has both bounds (``tests/faces/test_cli_bounds.py`` walks the commands): a number
without one reached a store as an ``OverflowError`` traceback (``payments list --limit 100000000000000000000``)
or started what it asked for (``run ledger --instances 100000``)."""

from __future__ import annotations

from typing import Final

#: the most records one consumer batch (one store transaction) takes: librdkafka consumes at most 1,000,000 at
#: once, and a batch far beyond a few thousand only lengthens the transaction a fault rolls back
MAX_BATCH: Final = 10_000
#: the most members of one service one ``payevents run`` starts (each a process of ~60-100 MB; members beyond the
#: channel's partition count only wait)
MAX_INSTANCES: Final = 64
#: the most rows a listing shows at once
MAX_LIMIT: Final = 1_000_000
#: partitions, offsets and outbox seqs as the stores keep them (64-bit integers)
MAX_STORED: Final = 2**63 - 1
#: the longest a consumer's poll waits for records (s): a stop is seen between polls
MAX_POLL_TIMEOUT_S: Final = 60.0
#: the shortest (s): below it the loop spins on an empty channel
MIN_POLL_TIMEOUT_S: Final = 0.01
#: payments or events of one demo, soak or benchmark run
MAX_RUN_SIZE: Final = 10_000_000


def batch_problem(max_batch: object) -> str | None:
    """Why ``max_batch`` cannot be a consumer's batch size (None when it can)."""
    if type(max_batch) is not int or not 1 <= max_batch <= MAX_BATCH:
        return f"{max_batch!r} must be a whole number from 1 to {MAX_BATCH:,}"
    return None


def poll_timeout_problem(seconds: object) -> str | None:
    """Why ``seconds`` cannot be a consumer's poll timeout (None when it can): NaN or 1e300 made the first poll
    wait for ever, a negative one spun."""
    if (isinstance(seconds, bool) or not isinstance(seconds, int | float)
            or not MIN_POLL_TIMEOUT_S <= seconds <= MAX_POLL_TIMEOUT_S):
        return f"{seconds!r} must be a number of seconds from {MIN_POLL_TIMEOUT_S} to {MAX_POLL_TIMEOUT_S:.0f}"
    return None
