"""The channel's rules enforced on read, by the consumer runtime for every service (issue #11).

* the key rule: a record's key is the UTF-8 paymentId of its body (``payload.paymentId`` for the legacy
  envelope); a keyless or wrong-key record is dead-lettered with a reason naming both values, before any effect;
* poison of any size never blocks: a record up to the broker's limit is dead-lettered; when its copy plus the
  dead-letter headers would not fit, the dead letter holds its hash, size, a prefix and the reason, marked cut;
* no error raised while dead-lettering ends a worker.

Both transports; all four downstream services (each under a name of its own, so a group of its own).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from typing import Any

import pytest
import runtime_counter as rc

from card_leak import shows_test_card
from payevents.contracts import channel
from payevents.errors import ConfigError
from payevents.runtime.consumer import ConsumerRuntime
from payevents.runtime.deadletter import (
    H_SHA256,
    H_SIZE,
    H_TRUNCATED,
    PREFIX_BYTES,
    DeadLetter,
    dead_letter_record,
    list_dead_letters,
)
from payevents.runtime.service import ServiceDef
from payevents.services import CONSUMER_SERVICES, load_service
from payevents.settings import Settings
from payevents.transport.base import Message, Record

Pos = tuple[int, int]  # (partition, offset) in the channel


def drain(rt: ConsumerRuntime, until: set[Pos], *, max_steps: int = 400) -> None:
    """Step until every record in ``until`` is behind the group's committed offsets."""
    topic = channel.topic_for(rt.settings.env)
    for _ in range(max_steps):
        rt.step()
        committed = rt.consumer.committed([(topic, p) for p, _ in until])
        if all((committed.get((topic, p)) or 0) > o for p, o in until):
            return
    raise AssertionError(f"{rt.service.name} did not get past {sorted(until)}: {rt.stats.as_dict()}")


def services(unique: str) -> list[ServiceDef]:
    return [dataclasses.replace(load_service(n), name=f"_{n}_{unique}") for n in CONSUMER_SERVICES]


def letters_of(s: Settings, service: str, positions: set[Pos]) -> dict[Pos, DeadLetter]:
    """The service's dead letters of the records at ``positions``."""
    out: dict[Pos, DeadLetter] = {}
    for d in list_dead_letters(s, limit=0, service=service):
        pos = (d.original_partition, d.original_offset)
        if d.original_topic == channel.topic_for(s.env) and pos in positions:
            out[pos] = d  # type: ignore[index]
    return out


def positions(s: Settings, values: list[bytes]) -> dict[bytes, Pos]:
    """Where each value landed in the channel (the last copy, should a test send one twice)."""
    from payevents.transport import open_transport

    wanted, found = set(values), {}
    t = open_transport(s)
    try:
        for p in range(s.partitions):
            for m in _read_all(t, channel.topic_for(s.env), p):
                if m.value in wanted:
                    found[m.value] = (p, m.offset)
    finally:
        t.close()
    assert set(found) == wanted
    return found


def _legacy(payment_id: str) -> bytes:
    return json.dumps({
        "eventType": "PAYMENT_PROCESSED", "timestamp": "2026-11-30T10:00:00", "version": "1.0",
        "payload": {"paymentId": payment_id, "orderId": "ORD-789", "amount": {"value": 9.99, "currency": "USD"},
                    "status": "SUCCESS",
                    "paymentMethod": {"type": "CREDIT_CARD", "last4": "4242", "expiryMonth": "12",
                                      "expiryYear": "2025", "network": "VISA"},
                    "transactionDetails": {"processorId": "p", "authorizationCode": "A", "captureId": "C"}},
        "metadata": {"correlationId": "c", "merchantId": "M", "source": "s", "environment": "dev",
                     "idempotencyKey": f"idem-{uuid.uuid4()}"},
    }).encode()


def test_keyless_and_wrong_key_records_are_dead_lettered_by_every_service(
    transport_settings: Settings, unique: str
) -> None:
    s = transport_settings
    pay = f"PAY-K-{unique}"
    topic = channel.topic_for(s.env)
    good1, _ = rc.event_record(s, pay, "1.00")
    good2, _ = rc.event_record(s, f"PAY-K2-{unique}", "2.00")  # the ledger takes one completion per payment
    wrong_body = rc.encode(rc.event_dict(f"PAY-OTHER-{unique}", "3.00"))
    bad = [
        Record(topic=topic, value=rc.encode(rc.event_dict(pay, "4.00")), key=None),  # keyless
        Record(topic=topic, value=wrong_body, key=pay.encode()),  # the body names another payment
        Record(topic=topic, value=_legacy(f"PAY-LEGACY-{unique}"), key=pay.encode()),  # legacy, wrong key
        Record(topic=topic, value=rc.encode(rc.event_dict(pay, "5.00")), key=pay.lower().encode()),  # case differs
    ]
    records = [good1, *bad, good2]
    rc.send(s, records)
    where = positions(s, [r.value for r in records])
    bad_pos = {where[r.value] for r in bad}
    for svc in services(unique):
        with ConsumerRuntime(s, svc, max_batch=50, poll_timeout=0.3) as rt:
            drain(rt, set(where.values()))
        letters = letters_of(s, svc.name, set(where.values()))
        assert set(letters) == bad_pos, svc.name  # exactly the four, not the good ones
        reasons = {pos: d.reason for pos, d in letters.items()}
        r_keyless = reasons[where[bad[0].value]]
        assert r_keyless.startswith("key:") and "no key" in r_keyless and pay in r_keyless
        r_other = reasons[where[bad[1].value]]
        assert r_other.startswith("key:") and pay in r_other and f"PAY-OTHER-{unique}" in r_other
        r_legacy = reasons[where[bad[2].value]]
        assert r_legacy.startswith("key:") and pay in r_legacy and f"PAY-LEGACY-{unique}" in r_legacy
        r_case = reasons[where[bad[3].value]]
        assert r_case.startswith("key:") and pay.lower() in r_case and pay in r_case


def _read_all(t: Any, topic: str, partition: int) -> list[Message]:
    out: list[Message] = []
    offset = 0
    while True:
        chunk = t.read(topic, partition, offset, max_records=500)
        if not chunk:
            return out
        out.extend(chunk)
        offset = chunk[-1].offset + 1


def test_a_key_holding_a_card_number_is_masked_in_the_reason(settings: Settings, counter: ServiceDef) -> None:
    pay = "PAY-KEYCARD"
    card_key = "4111 1111 1111 1111"
    topic = channel.topic_for(settings.env)
    rc.send(settings, [Record(topic=topic, value=rc.encode(rc.event_dict(pay, "1.00")), key=card_key.encode())])
    with ConsumerRuntime(settings, counter, poll_timeout=0.2) as rt:
        for _ in range(20):
            if rt.step().dead_lettered:
                break
    (letter,) = list_dead_letters(settings, service=counter.name)
    assert letter.reason.startswith("key:") and pay in letter.reason
    assert "4111 1111" not in letter.reason and "1111 1111 1111" not in letter.reason
    assert letter.key is not None and b"4111 1111" not in letter.key


# -- poison of any size --------------------------------------------------------------------------------------

#: a record as large as the producers accept (librdkafka's message.max.bytes, 1,000,000 bytes, below the
#: broker's 1,048,588), less room for its key, headers and framing
NEAR_LIMIT = channel.MAX_RECORD_BYTES - 400


@pytest.mark.parametrize("size", [NEAR_LIMIT, 200_000])
def test_a_record_of_any_size_is_dead_lettered_by_every_service_which_keeps_going(
    transport_settings: Settings, unique: str, size: int
) -> None:
    s = transport_settings
    pay = f"PAY-BIG-{unique}"
    ev = rc.event_dict(pay, "1.00")
    ev["data"]["metadata"]["description"] = "card 4111 1111 1111 1111 " + "x" * size
    big_value = rc.encode(ev)[: size]  # cut: not even valid JSON any more; with a card number up front
    assert len(big_value) == size
    big = rc.record(s, big_value, pay)
    after, _ = rc.event_record(s, pay, "2.00")
    rc.send(s, [big, after])
    where = positions(s, [big.value, after.value])
    digest = hashlib.sha256(big_value).hexdigest()
    for svc in services(unique):
        with ConsumerRuntime(s, svc, max_batch=50, poll_timeout=0.3) as rt:
            drain(rt, set(where.values()))
        letters = letters_of(s, svc.name, set(where.values()))
        assert set(letters) == {where[big.value]}, svc.name
        d = letters[where[big.value]]
        h = dict(d.headers)
        assert not shows_test_card(d.value) and not any(shows_test_card(v) for _, v in d.headers)
        if size == NEAR_LIMIT:  # its copy plus the dlq headers would not fit: cut
            assert h[H_TRUNCATED] == b"true"
            assert h[H_SIZE] == str(size).encode() and h[H_SHA256] == digest.encode()
            assert len(d.value) <= PREFIX_BYTES and big_value.startswith(d.value[:10])
            assert d.reason.startswith("invalid:") or d.reason.startswith("undecodable:")
            assert "size" in d.reason or "bytes" in d.reason
        else:  # it fits: the whole record, card digits masked
            assert H_TRUNCATED not in h and len(d.value) == size
            assert d.value.startswith(big_value[:20].replace(b"4111 1111 1111 1111", b"**** **** **** 1111"))


def test_a_number_no_decimal_can_hold_is_dead_lettered_by_every_service_which_keeps_going(
    transport_settings: Settings, unique: str
) -> None:
    """An amount like 1e999999999999999999999 (and a card number spelled with JSON escapes beside it): a dead
    letter naming the field, the card masked, and every service goes on to the next record."""
    s = transport_settings
    pay = f"PAY-HUGE-{unique}"
    ev = rc.event_dict(pay, "1.00")
    ev["data"]["metadata"]["description"] = "@@"
    value = rc.encode(ev).replace(b'"value":1.00', b'"value":1e999999999999999999999').replace(
        b'"@@"', b'"4111\\n1111\\n1111\\n1111"')
    assert b"1e999999999999999999999" in value
    bad = rc.record(s, value, pay)
    after, _ = rc.event_record(s, pay, "2.00")
    rc.send(s, [bad, after])
    where = positions(s, [bad.value, after.value])
    for svc in services(unique):
        with ConsumerRuntime(s, svc, max_batch=50, poll_timeout=0.3) as rt:
            drain(rt, set(where.values()))
            assert rt.stats.applied + rt.stats.ignored >= 1, svc.name
        letters = letters_of(s, svc.name, set(where.values()))
        assert set(letters) == {where[bad.value]}, svc.name
        d = letters[where[bad.value]]
        assert d.reason.startswith("card-number:")  # the card is named first, the number too
        assert "data.amount.value" in d.reason and "out of range" in d.reason
        assert b"1e999999999999999999999" in d.value and b"4111\\n1111" not in d.value


class _SmallBroker:
    """A dead-letter producer in front of a broker with a smaller record limit than ours: it refuses big
    records with the ConfigError the Kafka transport raises for MSG_SIZE_TOO_LARGE."""

    def __init__(self, inner: Any, limit: int) -> None:
        self.inner, self.limit = inner, limit

    def send(self, records: Any) -> Any:
        for r in records:
            if len(r.value) > self.limit:
                raise ConfigError("deliver record 0 of 1: Broker: Message size too large (record larger than the"
                                  " broker accepts)")
        return self.inner.send(records)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_dead_letter_the_broker_refuses_is_sent_cut_and_the_worker_goes_on(
    settings: Settings, counter: ServiceDef
) -> None:
    pay = "PAY-SMALLBROKER"
    big = rc.record(settings, b'{"eventType":"PaymentProcessed","pad":"' + b"y" * 50_000 + b'"}', pay)
    after, _ = rc.event_record(settings, pay, "2.00")
    rc.send(settings, [big, after])
    with ConsumerRuntime(settings, counter, poll_timeout=0.2) as rt:
        rt.backoff_initial = rt.backoff_max = 0.001
        real = rt._dlq_producer()
        small = _SmallBroker(real, limit=10_000)
        rt._dlq_producer = lambda: small  # type: ignore[method-assign]
        for _ in range(50):
            rt.step()  # must not raise
            if rt.stats.applied >= 1:
                break
        assert rt.stats.applied == 1 and rt.stats.dead_lettered == 1
    (letter,) = list_dead_letters(settings, service=counter.name)
    assert dict(letter.headers)[H_TRUNCATED] == b"true" and len(letter.value) <= PREFIX_BYTES
    assert dict(letter.headers)[H_SIZE] == str(len(big.value)).encode()


def test_building_a_dead_letter_never_raises() -> None:
    """Headers that are not bytes, a key of a megabyte, a reason with a card number: still a letter."""
    s = Settings(env="dev")  # type: ignore[arg-type]
    m = Message(topic="payments.dev.events", partition=0, offset=7, key=b"k" * 2_000_000,
                value=b"v" * 3_000_000, headers=(("x", "not-bytes"),), timestamp_ms=0)  # type: ignore[arg-type]
    rec = dead_letter_record(m, "svc", "invalid: 4111 1111 1111 1111 is odd", s)
    total = len(rec.value) + len(rec.key or b"") + sum(len(k) + len(v) for k, v in rec.headers)
    assert total <= channel.MAX_RECORD_BYTES
    assert b"4111 1111" not in b"".join(v for _, v in rec.headers)
    assert dict(rec.headers)[H_TRUNCATED] == b"true"


@pytest.mark.parametrize("value", [
    b'{"a":"4111\\u00201111\\u00201111\\u00201111"}',  # JSON escapes spell the separators
    b'{"a":"4111\\n1111\\n1111\\n1111"}',
    b'{"a":"\\u0034111111111111111"}',  # an escaped digit
    b'{"a":"4111\\n1111\\n1111\\n1111", broken',  # not JSON: the escapes cannot be re-encoded
    b'{"a":"\\u0034111111111111111" broken',
    b"\xff\xfe card 4111.1111.1111.1111 in bytes that are not UTF-8",
    "４１１１ １１１１ １１１１ １１１１".encode(),
])
def test_no_card_number_rests_in_a_dead_letter_however_it_is_written(value: bytes) -> None:
    from payevents.contracts.cardguard import holds_card_number

    assert holds_card_number(value)
    s = Settings(env="dev")  # type: ignore[arg-type]
    m = Message(topic="payments.dev.events", partition=0, offset=1, key=b"PAY-1", value=value,
                headers=(("note", value),), timestamp_ms=0)
    rec = dead_letter_record(m, "svc", "invalid: $: not valid JSON", s)
    assert not holds_card_number(rec.value)
    assert not any(holds_card_number(v) for _, v in rec.headers)
    assert dict(rec.headers)["dlq.redacted"].startswith(b"card-number")


def test_dead_letters_written_before_full_masking_are_masked_on_read(settings: Settings) -> None:
    """A letter already in the channel with a card number (an older writer) is masked by list/show/the API."""
    from payevents.runtime.deadletter import parse

    m = Message(topic=channel.dead_letter_topic_for(settings.env), partition=0, offset=3, key=b"4111.1111.1111.1111",
                value=b'{"note":"4111 1111 1111 1111"', timestamp_ms=0,
                headers=((channel.DLQ_REASON, b"invalid: 4111-1111-1111-1111"), ("x", b"4111_1111_1111_1111")))
    d = parse(m)
    text = json.dumps(d.to_dict())
    assert not shows_test_card(text) and "1111" in text


def test_a_reason_keeps_the_event_ids_it_names_and_masks_card_numbers() -> None:
    """A conflict's reason names the first eventId: a UUID whose groups happen to be digits is an id, not a
    card number, and must stay readable; a card number in the same reason is still masked."""
    from payevents.runtime.deadletter import redact

    eid = "48d8fd2b-d8a1-2345-6789-012345a405eb"
    reason = redact(f"conflict: already stated by event {eid}; description 4111 1111 1111 1111")
    assert eid in reason
    assert "4111 1111 1111 1111" not in reason and "1111" in reason


# -- the eventType header: what a record says it is ----------------------------------------------------------


def _typed(s: Settings, event_type: str, pay: str, *headers: str) -> Record:
    """A valid ``event_type`` body of payment ``pay``, with an eventType header per value in ``headers``."""
    from payevents.contracts.codec import encode_event
    from payevents.contracts.examples import example_event

    body = encode_event(example_event(event_type, event_id=str(uuid.uuid4()), payment_id=pay))
    return Record(topic=channel.topic_for(s.env), value=body, key=pay.encode(),
                  headers=tuple((channel.H_EVENT_TYPE, h.encode()) for h in headers))


def _marks(rt: ConsumerRuntime) -> dict[str, str]:
    from payevents.store import db

    with db.engine_for(rt.settings, rt.service.name).connect() as conn:
        return {str(e): str(o) for e, o in conn.exec_driver_sql(
            "SELECT event_id, outcome FROM processed_events WHERE service = ?", (rt.service.name,))}


def test_a_record_of_a_type_a_service_does_not_handle_is_passed_over_unread_and_a_lying_header_is_dead_lettered(
    transport_settings: Settings, unique: str
) -> None:
    """A record whose one eventType header names a known type the service has no handler for is passed over:
    no decode, no seen mark, counted ignored, its offset committed. Everything else is read in full, and a
    record whose header is not its body's type (or that carries two) is dead-lettered by every service that
    reads it — analytics, which handles every type, reads them all."""
    s = transport_settings
    pay = f"PAY-H-{unique}"
    passed = _typed(s, "PaymentInitiated", pay, "PaymentInitiated")  # says what it is, a type the ledger skips
    headless = _typed(s, "PaymentAuthorized", pay)  # says nothing: read in full, ignored with a mark
    processed = _typed(s, "PaymentProcessed", pay, "PaymentProcessed")
    lies_handled = _typed(s, "PaymentFailed", f"{pay}-2", "PaymentProcessed")  # claims a type the ledger handles
    lies_other = _typed(s, "PaymentProcessed", f"{pay}-3", "PaymentCaptured")  # claims one the ledger skips
    twice = _typed(s, "PaymentCaptured", f"{pay}-4", "PaymentCaptured", "PaymentCaptured")
    records = [passed, headless, processed, lies_handled, lies_other, twice]
    rc.send(s, records)
    where = positions(s, [r.value for r in records])
    ids = {r.value: json.loads(r.value)["eventId"] for r in records}
    by_name = {svc.name.split("_")[1]: svc for svc in services(unique)}

    ledger, analytics = by_name["ledger"], by_name["analytics"]
    with ConsumerRuntime(s, ledger, max_batch=50, poll_timeout=0.3) as rt:
        drain(rt, set(where.values()))
        marks, stats = _marks(rt), rt.stats
    letters = letters_of(s, ledger.name, set(where.values()))
    assert set(letters) == {where[lies_handled.value], where[twice.value]}
    assert letters[where[lies_handled.value]].reason == (
        "header: headers.eventType: 'PaymentProcessed' is not the body's eventType 'PaymentFailed'")
    assert letters[where[twice.value]].reason.startswith("header: headers.eventType: given 2 times")
    # passed over unread: no mark (the PaymentInitiated, and the PaymentProcessed that claims to be a capture)
    assert ids[passed.value] not in marks and ids[lies_other.value] not in marks
    assert marks[ids[headless.value]] == "ignored" and marks[ids[processed.value]] == "applied"
    assert stats.ignored == 3 and stats.applied == 1 and stats.dead_lettered == 2

    with ConsumerRuntime(s, analytics, max_batch=50, poll_timeout=0.3) as rt:
        drain(rt, set(where.values()))
        marks = _marks(rt)
    letters = letters_of(s, analytics.name, set(where.values()))
    assert set(letters) == {where[lies_handled.value], where[lies_other.value], where[twice.value]}
    assert letters[where[lies_other.value]].reason == (
        "header: headers.eventType: 'PaymentCaptured' is not the body's eventType 'PaymentProcessed'")
    assert {marks[ids[r.value]] for r in (passed, headless, processed)} == {"applied"}
