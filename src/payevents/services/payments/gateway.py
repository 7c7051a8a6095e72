"""The payment gateway interface and a simulated gateway.

A :class:`Gateway` authorizes and captures; the :class:`SimulatedGateway` answers like a card
processor would (6-character authorization codes, ``ch_…`` charge references, ``cap_…`` capture
ids) and declines on rules: magic last4 values in the style of the well-known test cards, customer
ids starting with ``cus_decline``, per-currency amount limits, a configured customer set, or a
decline code requested explicitly (``force_decline``).
"""

from __future__ import annotations

import dataclasses
import os
import random
import string
from collections.abc import Mapping
from typing import Final, Protocol

import msgspec

from payevents.contracts.events import FAILURE_CODES


class GatewayRequest(msgspec.Struct, kw_only=True, frozen=True):
    payment_id: str
    customer_id: str
    amount_minor: int
    currency: str
    method_type: str
    last4: str
    #: a decline code the caller wants (simulation only; a real gateway ignores it)
    force_decline: str | None = None


class Authorization(msgspec.Struct, kw_only=True, frozen=True):
    approved: bool
    gateway_reference: str
    authorization_code: str | None = None
    decline_code: str | None = None
    decline_reason: str | None = None


class Capture(msgspec.Struct, kw_only=True, frozen=True):
    captured: bool
    gateway_reference: str
    capture_id: str | None = None
    failure_code: str | None = None
    failure_reason: str | None = None


class Gateway(Protocol):
    name: str

    def authorize(self, request: GatewayRequest) -> Authorization: ...

    def capture(self, request: GatewayRequest, authorization: Authorization) -> Capture: ...


#: last4 -> (failure code, reason) at authorization, like the processors' published test cards
DECLINING_LAST4: Final[dict[str, tuple[str, str]]] = {
    "0002": ("card_declined", "Your card was declined."),
    "9995": ("insufficient_funds", "Your card has insufficient funds."),
    "0069": ("expired_card", "Your card has expired."),
    "0127": ("invalid_card", "Your card's security code is incorrect."),
    "0019": ("fraud_suspected", "The payment was blocked as suspected fraud."),
    "0119": ("processing_error", "An error occurred while processing your card."),
}
#: last4 whose capture fails after a successful authorization
CAPTURE_FAILING_LAST4: Final = frozenset({"0341"})

REASONS: Final[dict[str, str]] = {
    "card_declined": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
    "expired_card": "Your card has expired.",
    "invalid_card": "Your card number or security code is invalid.",
    "fraud_suspected": "The payment was blocked as suspected fraud.",
    "authorization_expired": "The authorization expired before capture.",
    "capture_failed": "The gateway could not capture the authorized amount.",
    "processing_error": "An error occurred while processing your card.",
    "cancelled": "The payment was cancelled.",
}

_ALNUM: Final = string.ascii_letters + string.digits
_UPPER: Final = string.ascii_uppercase + string.digits
#: random byte -> a character of the alphabet (bytes.translate: one C call per reference instead of
#: Random.choices' Python loop; the slight modulo bias is irrelevant for simulated references)
_ALNUM_TABLE: Final = bytes(ord(_ALNUM[b % len(_ALNUM)]) for b in range(256))
_UPPER_TABLE: Final = bytes(ord(_UPPER[b % len(_UPPER)]) for b in range(256))


@dataclasses.dataclass
class SimulatedGateway:
    """An in-process gateway with realistic references that declines by rule."""

    name: str = "simulated"
    decline_customers: frozenset[str] = frozenset()
    #: currency -> largest amount (minor units) it approves
    limits_minor: Mapping[str, int] = dataclasses.field(default_factory=dict)
    #: decline every authorization with this code (None: decide by the rules)
    decline_all: str | None = None
    _rng: random.Random = dataclasses.field(default_factory=lambda: random.Random(os.urandom(16)), repr=False)

    def _ref(self, prefix: str, n: int = 24) -> str:
        return prefix + self._rng.randbytes(n).translate(_ALNUM_TABLE).decode("ascii")

    def authorize(self, request: GatewayRequest) -> Authorization:
        ref = self._ref("ch_")
        decline = self._decline(request)
        if decline is not None:
            code, reason = decline
            return Authorization(approved=False, gateway_reference=ref, decline_code=code, decline_reason=reason)
        code = self._rng.randbytes(6).translate(_UPPER_TABLE).decode("ascii")
        return Authorization(approved=True, gateway_reference=ref, authorization_code=code)

    def capture(self, request: GatewayRequest, authorization: Authorization) -> Capture:
        if not authorization.approved:
            return Capture(captured=False, gateway_reference=authorization.gateway_reference,
                           failure_code="capture_failed", failure_reason="Nothing was authorized to capture.")
        if request.last4 in CAPTURE_FAILING_LAST4 or request.force_decline == "capture_failed":
            return Capture(captured=False, gateway_reference=authorization.gateway_reference,
                           failure_code="capture_failed", failure_reason=REASONS["capture_failed"])
        return Capture(captured=True, gateway_reference=authorization.gateway_reference, capture_id=self._ref("cap_"))

    def _decline(self, request: GatewayRequest) -> tuple[str, str] | None:
        forced = request.force_decline or self.decline_all
        if forced is not None and forced != "capture_failed":
            if forced not in FAILURE_CODES:
                forced = "card_declined"
            return forced, REASONS[forced]
        if request.last4 in DECLINING_LAST4:
            return DECLINING_LAST4[request.last4]
        if request.customer_id.startswith("cus_decline") or request.customer_id in self.decline_customers:
            return "card_declined", REASONS["card_declined"]
        limit = self.limits_minor.get(request.currency)
        if limit is not None and request.amount_minor > limit:
            return "insufficient_funds", REASONS["insufficient_funds"]
        return None
