"""The identifiers payevents makes, in one place: random where nothing else matters, time-ordered where they
become database keys (issue #14).

A random key (a version 4 UUID, or a uuid5 over a random name) lands anywhere in a B-tree index: a batch of N
new rows dirties about one leaf page per row in each such index once the index outgrows the batch, and every
dirty page is written again at commit (SQLite's WAL and its checkpoints; PostgreSQL's WAL, as a full page after
each checkpoint), and read back when it fell out of the cache. A key that grows with time lands on the right
edge of the index, where the batch's rows share a few pages. So the ids the platform makes that become keys —
payment ids, and the ids derived from them down the line: eventIds, journal entry ids — carry the time of the
payment in their first 48 bits:

* :func:`uuid7` — RFC 9562 version 7: 48 bits of Unix time in milliseconds, then 74 random bits. Payment and
  transaction ids (``pay_<uuid7>``).
* :func:`derived` — what a deterministic id derived from a name always was, uuid5(namespace, name) (the same
  name gives the same id: rebuilding a payment's event, or re-posting an event's entry, gives the same id) —
  except that when ``order_of`` carries a time-ordered UUID (version 7 or 8, as its last 36 characters), the
  uuid5's first 48 bits are that UUID's first 48 bits and its version is 8 (RFC 9562: custom layout). The rest of
  its bits are the uuid5's. Anything else in ``order_of`` (a version 4 id, a client's own id, an id made before
  this rule) gives exactly the uuid5, so an id once derived is derived the same again.

Events from other producers keep whatever ids they carry; their consumers' indexes then grow as those ids do.

* :func:`short` — a short id people read and type (``INV-`` and 20 hex digits), which the card guard never takes
  for a card number (see :data:`SHORT_HEX`).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from typing import Final

_VARIANT: Final = "89ab"
#: a canonical time-ordered UUID (version 7 or 8, RFC 9562 variant) at the end of an id (``pay_<uuid7>``)
_ORDERED_TAIL: Final = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[78][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")


def uuid4() -> str:
    """``str(uuid.uuid4())`` without the UUID object (a third of the cost): 122 random bits, version 4, the
    RFC 4122 variant. For ids that are never an index key (command ids, correlation ids)."""
    x = os.urandom(16).hex()
    return f"{x[:8]}-{x[8:12]}-4{x[13:16]}-{_VARIANT[int(x[16], 16) & 3]}{x[17:20]}-{x[20:]}"


def uuid7(*, at_ms: int | None = None, entropy: bytes | None = None) -> str:
    """RFC 9562 version 7: the Unix time in milliseconds (now, or ``at_ms``) in the first 48 bits, then 74 random
    bits (from ``entropy``, 10 bytes, when given: a reproducible id for a fixture)."""
    ms = time.time_ns() // 1_000_000 if at_ms is None else at_ms
    if not 0 <= ms < 1 << 48:
        raise ValueError(f"uuid7: {ms} ms is outside 48 bits")
    rand = os.urandom(10) if entropy is None else entropy
    if len(rand) != 10:
        raise ValueError("uuid7: entropy must be 10 bytes")
    x = f"{ms:012x}{rand.hex()}"
    return f"{x[:8]}-{x[8:12]}-7{x[13:16]}-{_VARIANT[int(x[16], 16) & 3]}{x[17:20]}-{x[20:]}"


def time_prefix(value: str) -> str | None:
    """The 12 hex digits of time at the start of the time-ordered UUID that ``value`` ends with (``pay_<uuid7>``,
    a version 7 or 8 UUID), or None when it ends with none."""
    if len(value) < 36 or _ORDERED_TAIL.match(value, len(value) - 36) is None:
        return None
    return value[-36:-28] + value[-27:-23]


def derived(namespace: uuid.UUID, name: str, order_of: str | None = None) -> str:
    """``str(uuid.uuid5(namespace, name))``, computed without the UUID object — or, when ``order_of`` carries a
    time-ordered UUID (:func:`time_prefix`), the same bits with that UUID's 48 bits of time first and version 8
    (see the module's note)."""
    x = hashlib.sha1(namespace.bytes + name.encode("utf-8")).hexdigest()
    prefix = time_prefix(order_of) if order_of is not None else None
    variant = _VARIANT[int(x[16], 16) & 3]
    if prefix is None:
        return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{variant}{x[17:20]}-{x[20:32]}"
    return f"{prefix[:8]}-{prefix[8:]}-8{x[13:16]}-{variant}{x[17:20]}-{x[20:32]}"


#: how many hex digits of a UUID a short id keeps. Twenty or more hex digits in a row are never a card number for
#: the card guard (:mod:`payevents.contracts.cardguard`: a hex id with a letter in it, or a group of more than 19
#: digits); sixteen can be one — 13 to 19 of them digits in a row that pass Luhn, as in ``INV-F134594772494960``,
#: about one id in 2,500 — and then the id itself is refused wherever it is written as text (a payment naming
#: the invoice).
SHORT_HEX: Final = 20


def short(prefix: str, value: uuid.UUID) -> str:
    """``prefix`` and the first :data:`SHORT_HEX` hex digits of ``value``, upper case (``INV-7D11240570895911A3F0``).
    ``prefix`` must end with a character that is neither a letter nor a digit, so that the hex digits stand alone."""
    if not prefix or prefix[-1].isalnum():
        raise ValueError(f"prefix: {prefix!r} must end with a separator (such as '-' or '_')")
    return f"{prefix}{value.hex[:SHORT_HEX].upper()}"
