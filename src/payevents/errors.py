"""The error hierarchy shared by every layer.

Every error that reaches a user names the field (a JSON path or a setting name) and the rule.
"""

from __future__ import annotations


class PayeventsError(Exception):
    """Base class of every error payevents raises on purpose."""


class ConfigError(PayeventsError):
    """A setting is missing or has a value outside its rule (e.g. env='production')."""


class ContractError(PayeventsError):
    """A value breaks a contract rule outside of event validation (e.g. an unknown env)."""


class TransientError(PayeventsError):
    """A fault that is expected to pass (database or broker unavailable): retry with backoff."""


class PoisonEvent(PayeventsError):
    """A handler found an event impossible to apply: it goes to the dead-letter channel.

    ``reason`` is a short, human-readable reason stored in the dead-letter record's headers.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IdempotencyConflict(PayeventsError):
    """The same idempotency key was used with different content (Stripe's rule)."""


class IllegalTransition(PayeventsError):
    """A payment lifecycle command is not allowed in the payment's current state."""


class NotFound(PayeventsError):
    """A requested entity (payment, invoice, customer, ...) does not exist."""
