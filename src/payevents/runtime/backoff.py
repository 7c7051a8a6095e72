"""One exponential backoff policy: the worker supervisor's restarts and a worker's start-up wait use it; and
:func:`is_transient`, the one answer to which faults pass (backed off and retried) and which do not.

``Backoff(initial, maximum).next()`` returns ``initial``, then twice that, ... capped at ``maximum``; with
``jitter`` each delay is drawn from its upper half, so members that failed together do not retry together.
"""

from __future__ import annotations

import dataclasses
import random

import sqlalchemy as sa

from payevents.errors import TransientError
from payevents.store import db


@dataclasses.dataclass
class Backoff:
    initial: float = 0.05
    maximum: float = 5.0
    factor: float = 2.0
    jitter: bool = True
    #: delays handed out since the last reset
    attempt: int = 0

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.maximum < self.initial or self.factor < 1:
            raise ValueError(f"backoff: need 0 < initial <= maximum and factor >= 1 (got {self})")

    def next(self) -> float:
        """The next delay in seconds."""
        self.attempt += 1
        delay = min(self.maximum, self.initial * self.factor ** (self.attempt - 1))
        return random.uniform(delay / 2, delay) if self.jitter else delay

    def reset(self) -> None:
        self.attempt = 0


def is_transient(exc: BaseException) -> bool:
    """Faults expected to pass: the transport's TransientError, lost or refused database connections,
    a locked SQLite file, pool timeouts, a read-only database (``store.db.store_state``)."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        return (bool(exc.connection_invalidated) or isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)
                or db.store_state(exc) is not None)
    return isinstance(exc, sa.exc.DisconnectionError | sa.exc.TimeoutError | sa.exc.ResourceClosedError)
