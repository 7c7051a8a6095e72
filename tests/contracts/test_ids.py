"""The identifiers payevents makes (``payevents.contracts.ids``, issue #14): the ids that become database keys
grow with time, so a store's indexes take new rows at their right edge; derived ids stay what they always were
for anything that is not time-ordered, so an id once derived is derived the same again."""

from __future__ import annotations

import itertools
import time
import uuid

import pytest

from payevents.contracts import cardguard, ids

NS = uuid.uuid5(uuid.NAMESPACE_URL, "https://payevents.local/tests/ids")


def test_uuid7_is_rfc_9562_version_7_with_the_time_first() -> None:
    before = time.time_ns() // 1_000_000
    made = [ids.uuid7() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert len(set(made)) == len(made)
    for s in made:
        u = uuid.UUID(s)
        assert str(u) == s and u.version == 7 and u.variant == uuid.RFC_4122
        assert before <= u.int >> 80 <= after  # the first 48 bits: Unix time in ms
    # the 74 bits after the time are random: every variant digit and every hex digit of the tail turns up
    assert {s[19] for s in made} == set("89ab")
    assert set("".join(s[24:] for s in made)) == set("0123456789abcdef")


def test_ids_made_later_sort_after_earlier_ones() -> None:
    """What keeps an index's inserts at its right edge: across milliseconds, the text order is the time order
    (a version 4 id falls anywhere)."""
    batches = []
    for _ in range(5):
        batches.append([ids.uuid7() for _ in range(50)])
        time.sleep(0.002)
    for earlier, later in itertools.pairwise(batches):
        assert max(earlier) < min(later)


def test_uuid7_of_a_given_time_and_entropy_is_reproducible() -> None:
    a = ids.uuid7(at_ms=1_765_449_000_000, entropy=bytes(range(10)))
    assert a == ids.uuid7(at_ms=1_765_449_000_000, entropy=bytes(range(10)))
    assert uuid.UUID(a).int >> 80 == 1_765_449_000_000
    assert ids.uuid7(at_ms=1_765_449_000_001, entropy=bytes(range(10))) > a
    with pytest.raises(ValueError, match="48 bits"):
        ids.uuid7(at_ms=1 << 48)
    with pytest.raises(ValueError, match="10 bytes"):
        ids.uuid7(entropy=b"short")


def test_derived_is_uuid5_unless_ordered_by_a_time_ordered_id() -> None:
    """Anything that is not a time-ordered UUID (a version 4 id, a client's own id, an id derived before this rule)
    gives exactly uuid5 — the ids already stored are derived again unchanged."""
    for i in range(1000):
        name = f"pay_{uuid.uuid4()}/PaymentProcessed" if i % 3 else f"pay-ü-{i}"
        expected = str(uuid.uuid5(NS, name))
        for order_of in (None, name, f"pay_{uuid.uuid4()}", str(uuid.uuid5(NS, "x")), "PAY-123-456",
                         f"pay_{ids.uuid7().upper()}", "019b0cf5-e440-7a25-af22-6aa25f4dba7"):  # short by one
            assert ids.derived(NS, name, order_of) == expected


def test_derived_from_a_time_ordered_id_carries_its_time() -> None:
    for _ in range(500):
        pid = f"pay_{ids.uuid7()}"
        made = {t: ids.derived(NS, f"{pid}/{t}", pid) for t in ("PaymentInitiated", "PaymentProcessed")}
        assert len(set(made.values())) == 2  # one id per name
        for t, s in made.items():
            assert s == ids.derived(NS, f"{pid}/{t}", pid)  # deterministic
            u, plain = uuid.UUID(s), uuid.UUID(ids.derived(NS, f"{pid}/{t}"))
            assert str(u) == s and u.version == 8 and u.variant == uuid.RFC_4122
            assert s[:13] == pid[4:17]  # the payment's 48 bits of time first
            assert s[15:] == str(plain)[15:]  # the rest are the uuid5's (after the version digit)
            # and a derived id orders what is derived from it in turn (an eventId -> its journal entry)
            assert ids.derived(NS, s, s)[:13] == s[:13]


def test_time_prefix_reads_only_a_canonical_time_ordered_tail() -> None:
    v7 = ids.uuid7()
    assert ids.time_prefix(v7) == ids.time_prefix(f"pay_{v7}") == v7[:8] + v7[9:13]
    for not_ordered in (str(uuid.uuid4()), str(uuid.uuid5(NS, "a")), v7.upper(), v7[:-1], "", "pay_1234567890",
                        v7.replace("-", ""), v7[:19] + "c" + v7[20:]):  # variant digit outside 8-b
        assert ids.time_prefix(not_ordered) is None


def test_made_ids_never_look_like_a_card_number() -> None:
    """The card guard refuses a Luhn-valid run of 13+ digits anywhere; a payment id's dashed groups never hold one."""
    for _ in range(3000):
        pid = f"pay_{ids.uuid7()}"
        assert not cardguard.contains_card_number(pid)
        assert not cardguard.contains_card_number(ids.derived(NS, f"{pid}/PaymentProcessed", pid))


def test_a_short_id_is_never_a_card_number_whatever_its_digits() -> None:
    """``ids.short`` keeps 20 hex digits: with a letter among them they are a hex id, all digits they are more
    than 19 — the card guard takes neither for a card number. Sixteen were taken for one (``F134594772494960``:
    15 digits that pass Luhn)."""
    assert cardguard.contains_card_number("INV-F134594772494960")  # the 16-digit id of before
    worst = [uuid.UUID("f1345947-7249-4960-8abc-def012345678"),  # a Luhn-valid run right after a letter
             uuid.UUID("41111111-1111-1111-1111-111111111111"),  # all digits: 4111…, a test Visa number's digits
             uuid.UUID("7d112405-7089-5911-a3f0-000000000000")]  # INV-7D11240570895911 (the API's, under order-6873)
    for u in worst:
        short = ids.short("INV-", u)
        assert short.startswith("INV-") and len(short) == 24 and short[4:] == u.hex[:20].upper()
        cardguard.check_free_text("invoice_id", short)
    with pytest.raises(ValueError, match="separator"):
        ids.short("INV", worst[0])
