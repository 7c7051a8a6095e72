"""The outbox audit: re-walk the hash chain and report the first broken position.

Every stored event carries ``prev_hash`` and ``hash = sha256(prev_hash + canonical row)``, ordered by a
dense seq (1, 2, 3, ...), and the chain-head row holds the last seq and hash. A row edited (even with
the immutability triggers dropped), deleted or inserted breaks the chain at a position that
:func:`verify_engine` reports. ``payevents audit verify`` calls :func:`verify`.
"""

from __future__ import annotations

import dataclasses

from sqlalchemy.engine import Engine

from payevents.runtime.outbox import GENESIS_HASH, OUTBOX_MIGRATIONS, chain_hash, iter_events
from payevents.settings import Settings
from payevents.store.db import dialect, engine_for, migrate


@dataclasses.dataclass(frozen=True, slots=True)
class AuditReport:
    ok: bool
    #: rows whose position and hash were checked (all of them when ok)
    checked: int
    #: the first seq at which the chain breaks (None when ok)
    first_broken_seq: int | None
    reason: str

    def __str__(self) -> str:
        if self.ok:
            return f"OK: {self.checked} events, hash chain intact"
        return f"BROKEN at seq {self.first_broken_seq}: {self.reason} ({self.checked} events checked before it)"


def verify(settings: Settings) -> AuditReport:
    """Verify the payments outbox of ``settings``."""
    engine = engine_for(settings, "payments")
    migrate(engine, "payments", OUTBOX_MIGRATIONS)
    return verify_engine(engine)


def verify_engine(engine: Engine) -> AuditReport:
    """Walk the chain in seq order in one consistent snapshot (safe while writers append)."""
    with engine.connect() as conn:
        conn = dialect(conn).snapshot(conn)
        with conn.begin():
            head = conn.exec_driver_sql("SELECT last_seq, last_hash FROM outbox_chain WHERE id = 1").first()
            if head is None:
                return AuditReport(False, 0, 1, "the chain-head row is missing")
            head_seq, head_hash = int(head[0]), str(head[1])
            prev_seq, prev_hash = 0, GENESIS_HASH
            checked = 0
            for row in iter_events(conn):
                seq = int(row.seq)
                if seq > head_seq:
                    return AuditReport(False, checked, seq,
                                       f"seq {seq} lies beyond the chain head (last seq {head_seq}): row inserted")
                if seq != prev_seq + 1:
                    if seq <= prev_seq:
                        reason = f"unexpected seq {seq} before seq {prev_seq + 1}: row inserted"
                        return AuditReport(False, checked, seq, reason)
                    missing = f"seq {prev_seq + 1}" if seq == prev_seq + 2 else f"seqs {prev_seq + 1}..{seq - 1}"
                    return AuditReport(False, checked, prev_seq + 1, f"{missing} missing: row deleted")
                if row.prev_hash != prev_hash:
                    where = "the genesis hash" if seq == 1 else f"the hash of seq {prev_seq}"
                    return AuditReport(False, checked, seq,
                                       f"prev_hash does not match {where}: a row was replaced, inserted or re-hashed")
                if chain_hash(prev_hash, row._mapping) != row.hash:
                    return AuditReport(False, checked, seq, "stored content does not match its hash: row edited")
                prev_seq, prev_hash = seq, str(row.hash)
                checked += 1
            if prev_seq < head_seq:
                missing = f"seq {head_seq}" if prev_seq + 1 == head_seq else f"seqs {prev_seq + 1}..{head_seq}"
                return AuditReport(False, checked, prev_seq + 1, f"{missing} missing at the end: row deleted")
            if prev_hash != head_hash:
                return AuditReport(False, checked, head_seq, "the last hash differs from the chain head")
    return AuditReport(True, checked, None, f"{checked} events, hash chain intact up to seq {head_seq}")
