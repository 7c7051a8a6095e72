"""The delivery worker's hand-built message bytes parse to the same e-mail as the ``email`` package's
(:func:`build_message`, the reference), and an intent that cannot become an e-mail is marked failed
instead of blocking the queue."""

from __future__ import annotations

import email
import email.policy
import random
import re
from datetime import UTC, datetime, timedelta, timezone
from email.header import decode_header, make_header
from email.message import EmailMessage

import jinja2
import msgspec
import pytest
from conftest_an import feed, processed
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from jinja2 import TemplateError
from markupsafe import Markup

from payevents.services import notifications
from payevents.services.notifications import store as notifications_store
from payevents.services.notifications.render import (
    build_message,
    compile_template,
    message_bytes,
    render_confirmation,
    render_steps,
    render_with_jinja,
    to_function,
)
from payevents.services.notifications.service import SERVICE
from payevents.settings import Settings

NAMES = ["Anna Müller", "Bob", "Doe, John", 'Jo "JJ" Smith', "Taro 山田", "", "Zoë O'Brien-Łukasz", "A" * 200,
         "back\\slash"]
LOCALES = ["en_US", "de_DE", "ja_JP", "fr_CH", "ar_EG", "hi_IN"]
CURRENCIES = {"USD": "1234567.89", "EUR": "0.5", "JPY": "1500", "KWD": "12.345", "CHF": "99.99", "INR": "100000"}


def _parse(data: bytes) -> EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


def _view(msg: EmailMessage) -> tuple[object, ...]:
    # the transfer encoding may differ (the email package sends non-ASCII text as 8bit, we as quoted-printable),
    # and the order of MIME-Version and Content-Type
    headers = tuple(sorted((k, str(v)) for k, v in msg.items() if k != "Content-Transfer-Encoding"))
    parts = tuple((p.get_content_type(), p.get_content_charset(), p.get_content())
                  for p in msg.walk() if not p.is_multipart())
    return headers, parts


@pytest.mark.parametrize("seed", range(4))
def test_message_bytes_parse_like_the_email_package(seed: int) -> None:
    rng = random.Random(seed)
    for i in range(40):
        currency = rng.choice(list(CURRENCIES))
        event = processed(f"pay_{seed}_{i}", CURRENCIES[currency], currency, invoice_id=rng.choice([None, "INV-1"]),
                          order_id=rng.choice([None, "ORD-7"]), last4=f"{rng.randint(0, 9999):04d}").event
        name = rng.choice(NAMES)
        mail_from = rng.choice(["payments@payevents.local", "Payevents Billing <billing@shop.example>"])
        mail = render_confirmation(event, name, rng.choice(LOCALES), mail_from)  # type: ignore[arg-type]
        text = mail.text + rng.choice(["", "\n-- \n", "x" * 120 + "\n", "=tail =20 \t\n", ".\nFrom here\n"])
        html = rng.choice([mail.html, None])
        kw = dict(event_id=event.eventId, payment_id=event.data.paymentId, mail_from=mail_from,
                  recipient=f"user{i}@example.com", recipient_name=name, subject=mail.subject, text=text,
                  html=html, created_at="2025-12-11T10:30:00.123456+00:00")
        ours = message_bytes(**kw)  # type: ignore[arg-type]
        assert ours == message_bytes(**kw)  # type: ignore[arg-type]  # deterministic: a re-send is identical
        assert ours.isascii() and b"\r" not in ours  # 7-bit clean: safe for any SMTP server
        assert max(len(line) for line in ours.split(b"\n")) <= 998
        assert all(len(w) <= 75 for w in re.findall(rb"=\?utf-8\?b\?[^?]*\?=", ours))  # RFC 2047 word limit
        assert _view(_parse(ours)) == _view(_parse(bytes(build_message(**kw))))  # type: ignore[arg-type]


def test_line_breaks_in_header_values_do_not_inject_headers() -> None:
    data = message_bytes(event_id="e1", payment_id="p1\nBcc: evil@example.com", mail_from="payments@payevents.local",
                         recipient="bob@example.com", recipient_name="Bob\r\nBcc: evil@example.com", subject="Hi",
                         text="hello\n", html=None, created_at="2025-12-11T10:30:00+00:00")
    msg = _parse(data)
    assert msg["Bcc"] is None and msg["To"].addresses[0].addr_spec == "bob@example.com"
    with pytest.raises(ValueError, match="recipient"):
        message_bytes(event_id="e1", payment_id="p1", mail_from="payments@payevents.local", recipient="jörg@example.de",
                      recipient_name="Jörg", subject="Hi", text="hello\n", html=None,
                      created_at="2025-12-11T10:30:00+00:00")


def test_unrenderable_intent_is_failed_with_reason_and_does_not_block_the_rest(settings: Settings) -> None:
    # the directory refuses such an address now; one stored before that rule still reaches the delivery
    notifications.add_customer(settings, "cus_utf8", "Jörg", "joerg@example.de")
    with notifications_store.engine(settings).begin() as conn:
        conn.exec_driver_sql("UPDATE customers SET email = 'jörg@example.de' WHERE customer_id = 'cus_utf8'")
    notifications.add_customer(settings, "cus_ok", "Olga", "olga@example.com")
    feed(settings, SERVICE, [processed("p_utf8", "1.00", customer_id="cus_utf8"),
                             processed("p_ok", "2.00", customer_id="cus_ok")])
    report = notifications.deliver_pending(settings)
    assert (report.sent, report.failed) == (1, 1)
    (failed,) = notifications.list_notifications(settings, status="failed")
    assert (failed.payment_id, failed.reason_code) == ("p_utf8", "unrenderable")
    assert "recipient" in (failed.reason or "")
    assert [n.payment_id for n in notifications.list_notifications(settings, status="sent")] == ["p_ok"]
    assert notifications.deliver_pending(settings).claimed == 0


def test_long_non_ascii_names_and_subjects_fold_into_rfc2047_words() -> None:
    # (the email package's parser puts spaces between adjacent encoded-words of an address: decode as RFC 2047 says)
    name, subject = "Łukasz Żółć-Müller " * 12 + "山田太郎" * 10, "Zahlungsbestätigung: " + "1.234,56 €" * 9
    data = message_bytes(event_id="e1", payment_id="p1", mail_from="payments@payevents.local",
                         recipient="u@example.com", recipient_name=name, subject=subject, text="x\n", html=None,
                         created_at="2025-12-11T10:30:00+00:00")
    raw = email.message_from_bytes(data, policy=email.policy.compat32)
    assert str(make_header(decode_header(raw["To"]))) == f"{name} <u@example.com>"
    assert str(make_header(decode_header(raw["Subject"]))) == subject == str(_parse(data)["Subject"])
    words = re.findall(rb"=\?utf-8\?b\?[^?]*\?=", data)
    assert len(words) > 10 and all(len(w) <= 75 for w in words)


def test_cached_amount_and_date_formats_are_babels_byte_for_byte() -> None:
    """Issue #14: amounts and dates are formatted from what is cached per locale and currency (pattern, digits,
    symbol; date per day, time per second). The result must be babel's own, exactly, for every format locale
    a mail can use and every currency."""
    import random
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal

    from babel.dates import format_datetime
    from babel.numbers import format_currency

    from payevents.contracts.money import exponent
    from payevents.services.notifications import render

    rng = random.Random(14)
    locales = ["en", "en_US", "en_GB", "en_IN", "de", "de_DE", "de_CH", "de_AT", "de_LI", "fr", "fr_FR", "fr_CH",
               "fr_CA", "fr_BE", "fr_MA"]
    currencies = ["USD", "EUR", "CHF", "JPY", "GBP", "KWD", "BHD", "INR", "CAD", "SEK", "MAD", "CLF", "ISK"]
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for loc in locales:
        for cur in currencies:
            digits = exponent(cur)
            for minor in [1, 7, 99, 100, 1000, 12345, 999999, 1000000, 123456789, 10**14, 10**18,
                          *(rng.randrange(1, 10**rng.randrange(1, 19)) for _ in range(40))]:
                for value in (Decimal(minor).scaleb(-digits), -Decimal(minor).scaleb(-digits),
                              # more digits than the currency has: babel rounds half-even to its minor unit
                              Decimal(minor).scaleb(-digits - rng.randrange(1, 4))):
                    assert render.format_amount(value, cur, loc) == format_currency(
                        value, cur, locale=loc, currency_digits=True), (loc, cur, value)
        for _ in range(60):
            at = start + timedelta(seconds=rng.randrange(0, 400 * 86400), microseconds=rng.randrange(0, 10**6))
            assert render.format_processed_at(at, loc) == format_datetime(at, "medium", tzinfo=UTC, locale=loc)


# -- the precompiled templates render what Jinja renders -----------------------------------------------------

_free = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)
_html_hostile = st.sampled_from(["<b>x</b>", "a & b", '"quoted"', "it's", "{{ name }}", "{% if x %}", ""])


@hyp_settings(max_examples=200, deadline=None)
@given(name=st.one_of(_free, _html_hostile), sender=st.one_of(_free, _html_hostile),
       locale=st.sampled_from([*LOCALES, "fr_FR", "de_CH", "es_ES", "xx_INVALID", ""]),
       currency=st.sampled_from(list(CURRENCIES)), description=st.one_of(st.none(), _free, _html_hostile),
       order_id=st.one_of(st.none(), st.just(""), _html_hostile, st.just("ORD-7")),
       invoice_id=st.one_of(st.none(), _html_hostile, st.just("INV-1")),
       method=st.sampled_from(["credit_card", "sepa_debit", "<img src=x>", "apple-pay"]))
def test_precompiled_templates_render_what_jinja_renders(
    name: str, sender: str, locale: str, currency: str, description: str | None, order_id: str | None,
    invoice_id: str | None, method: str,
) -> None:
    decoded = processed("pay_<1>&", CURRENCIES[currency], currency, invoice_id=invoice_id, order_id=order_id,
                        method=method)
    event = decoded.event
    meta = dict(description=description) if description is not None else {}
    if order_id is not None:
        meta["orderId"] = order_id
    event = msgspec.structs.replace(event, data=msgspec.structs.replace(
        event.data, metadata=msgspec.structs.replace(event.data.metadata, **meta) if meta else msgspec.UNSET))
    assert render_confirmation(event, name, locale, sender) == render_with_jinja(event, name, locale, sender)


def test_precompiled_templates_follow_the_template_files_and_refuse_what_they_cannot_compile() -> None:
    source = "A{{ x }}{% if y %}<{{ y.k }}{% if x %}{{ z[0] }}{% endif %}>{% endif %}{{ z[1] }}|{{ y.items }}\n"
    steps = compile_template(source)
    contexts: list[dict[str, object]] = [
        {"x": "<&>", "y": {"k": "'", "items": "i"}, "z": ("a", '"')},
        {"x": Markup("<b>"), "y": {"k": Markup("&amp;")}, "z": ["", 7]},
        {"x": "", "y": {}, "z": "ab"},
    ]
    for autoescape in (True, False):
        jinja = jinja2.Environment(autoescape=autoescape, keep_trailing_newline=True).from_string(source)
        for ctx in contexts:
            expected = jinja.render(ctx)
            assert render_steps(steps, ctx, autoescape) == expected
            assert to_function(steps, autoescape)(ctx) == expected
    for source in ("{{ x|upper }}", "{% for a in b %}{% endfor %}", "{# note #}", "{{ x + 1 }}", "{% if a %}",
                   "{% endif %}", "{{- x }}", "{% if a and b %}{% endif %}"):
        with pytest.raises(TemplateError):
            compile_template(source)


@hyp_settings(max_examples=300, deadline=None)
@given(st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                                               timezone(-timedelta(hours=11))])))
def test_the_date_header_is_the_email_packages(at: datetime) -> None:
    from email.utils import format_datetime

    from payevents.services.notifications.render import mail_date

    assert mail_date(at.isoformat()) == format_datetime(at.astimezone(UTC))


@hyp_settings(max_examples=300, deadline=None)
@given(st.one_of(st.uuids().map(str), st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)))
def test_the_message_key_is_uuid5s(event_id: str) -> None:
    """The Maildir file name, the Message-ID and the MIME boundary come from :func:`message_key`, computed without
    ``uuid.uuid5`` (issue #14): it must be ``uuid.uuid5``'s, for any eventId."""
    import uuid

    from payevents.services.notifications.render import MESSAGE_ID_NAMESPACE, message_key

    assert message_key(event_id) == str(uuid.uuid5(MESSAGE_ID_NAMESPACE, f"payevents.notification:{event_id}"))


@hyp_settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["", "a", "Zoë", "x" * 90, "\u202f", "=", " ", "\t"]), max_size=8).flatmap(
    lambda parts: st.lists(st.sampled_from(["\n", "\r\n", "\r", ""]), min_size=len(parts), max_size=len(parts)).map(
        lambda ends: "".join(p + e for p, e in zip(parts, ends, strict=True)))))
def test_a_bodys_lines_are_split_and_joined_only_where_they_must_be(content: str) -> None:
    """``render._lines`` (issue #14: the rendered bodies have no ``\\r``, so they are not split and joined again)
    gives what splitting into lines and joining them with ``\\n`` gave, for any mix of line ends."""
    from payevents.services.notifications.render import _lines

    assert _lines(content) == b"\n".join(content.encode("utf-8").splitlines()) + b"\n"
