"""Notifications: the customer directory, confirmation intents (replay-safe, skipped with reasons),
the rendered e-mail, and exactly-once delivery into the Maildir."""

from __future__ import annotations

import email
import email.policy
import json
import mailbox
import re
from datetime import timedelta
from pathlib import Path

import pytest
from conftest_an import feed, processed
from typer.testing import CliRunner

from payevents.errors import ContractError, NotFound
from payevents.services import notifications
from payevents.services.notifications import delivery
from payevents.services.notifications.render import message_id_for
from payevents.services.notifications.service import SERVICE
from payevents.settings import Settings


def _maildir(settings: Settings) -> list[email.message.EmailMessage]:
    box = mailbox.Maildir(str(notifications.maildir_path(settings)), create=False)
    return [email.message_from_bytes(box.get_bytes(k), policy=email.policy.default) for k in box.keys()]  # type: ignore[misc]


def _content(msg: email.message.EmailMessage, subtype: str) -> str:
    body = msg.get_body((subtype,))
    assert body is not None, f"no text/{subtype} part"
    return str(body.get_content())


def test_customer_directory(store_settings: Settings) -> None:
    c = notifications.add_customer(store_settings, "cus_1", "Anna Müller", "anna@example.de", "de-DE")
    assert (c.customer_id, c.name, c.email, c.locale) == ("cus_1", "Anna Müller", "anna@example.de", "de_DE")
    notifications.add_customer(store_settings, "cus_2", "Bob", None)
    updated = notifications.add_customer(store_settings, "cus_1", "Anna Schmidt", "anna@example.org", "de_AT")
    assert (updated.name, updated.email, updated.locale) == ("Anna Schmidt", "anna@example.org", "de_AT")
    assert notifications.get_customer(store_settings, "cus_2").email is None
    assert [x.customer_id for x in notifications.list_customers(store_settings)] == ["cus_1", "cus_2"]
    with pytest.raises(NotFound, match="cus_404"):
        notifications.get_customer(store_settings, "cus_404")
    with pytest.raises(ContractError, match="locale: 'xx_YY'"):
        notifications.add_customer(store_settings, "cus_3", "Carl", "carl@example.com", "xx_YY")
    with pytest.raises(ContractError, match="email: 'not-an-address'"):
        notifications.add_customer(store_settings, "cus_3", "Carl", "not-an-address")
    # an address no confirmation can ever be sent to (the messages are 7-bit, without SMTPUTF8) is refused at the
    # door, not accepted and then failed at every payment as unrenderable
    for address in ("jürgen@example.com", "josé.garcía@example.com", "用户@example.com"):
        with pytest.raises(ContractError, match=r"email: .* ASCII"):
            notifications.add_customer(store_settings, "cus_3", "Jürgen", address)


def test_intents_are_replay_safe_and_unsendable_ones_skipped_with_reason(store_settings: Settings) -> None:
    notifications.add_customer(store_settings, "cus_ok", "Olga", "olga@example.com")
    notifications.add_customer(store_settings, "cus_nomail", "Nadia", None)
    events = [
        processed("p_ok", "10.00", "USD", customer_id="cus_ok"),
        processed("p_unknown", "11.00", "USD", customer_id="cus_ghost"),
        processed("p_nomail", "12.00", "USD", customer_id="cus_nomail"),
        processed("p_legacy", "99.99", "USD", legacy=True, order_id="ORD-789"),
    ]
    feed(store_settings, SERVICE, events * 3 + events[::-1], batch=5)  # duplicates within and across batches
    items = {n.payment_id: n for n in notifications.list_notifications(store_settings)}
    assert len(items) == 4
    assert items["p_ok"].status == "pending" and items["p_ok"].recipient == "olga@example.com"
    assert (items["p_unknown"].status, items["p_unknown"].reason_code) == ("skipped", "unknown_customer")
    assert "cus_ghost" in (items["p_unknown"].reason or "")
    assert (items["p_nomail"].status, items["p_nomail"].reason_code) == ("skipped", "no_email")
    assert "no e-mail" in (items["p_nomail"].reason or "")
    assert (items["p_legacy"].status, items["p_legacy"].reason_code) == ("skipped", "no_customer_id")
    assert items["p_legacy"].legacy and "legacy event without customerId" in (items["p_legacy"].reason or "")
    assert [n.payment_id for n in notifications.list_notifications(store_settings, status="pending")] == ["p_ok"]
    assert notifications.summary(store_settings)["reasons"]["skipped"] == {
        "no_customer_id": 1, "no_email": 1, "unknown_customer": 1}
    with pytest.raises(ContractError, match="status"):
        notifications.list_notifications(store_settings, status="lost")

    # skipped ones are never delivered; the pending one exactly once
    assert notifications.deliver_pending(store_settings).sent == 1
    assert notifications.deliver_pending(store_settings).claimed == 0
    assert [m["To"].addresses[0].addr_spec for m in _maildir(store_settings)] == ["olga@example.com"]


def test_confirmation_content_locale_and_references(settings: Settings) -> None:
    notifications.add_customer(settings, "cus_de", "Anna Müller", "anna@example.de", "de_DE")
    notifications.add_customer(settings, "cus_jp", "Taro Yamada", "taro@example.jp", "ja_JP")
    notifications.add_customer(settings, "cus_kw", "Fahad", "fahad@example.com", "en_US")
    de = processed("p_de", "1234.50", "EUR", customer_id="cus_de", order_id="ORD-12345", invoice_id="INV-2025-1",
                   method="credit_card", last4="4242")
    jp = processed("p_jp", "1500", "JPY", customer_id="cus_jp", method="debit_card", last4="0005")
    kw = processed("p_kw", "1.234", "KWD", customer_id="cus_kw", method="bank_transfer", last4="9876")
    feed(settings, SERVICE, [de, jp, kw])
    assert notifications.deliver_pending(settings).sent == 3
    mails = {m["X-Payevents-Payment-Id"]: m for m in _maildir(settings)}

    m = mails["p_de"]
    text = _content(m, "plain")
    html = _content(m, "html")
    assert m["Subject"] == "Zahlungsbestätigung: 1.234,50\xa0€"  # German words with German formats
    assert m["Message-ID"] == message_id_for(de.event_id, settings.mail_from)
    assert m["To"].addresses[0].display_name == "Anna Müller"
    for body in (text, html):
        assert "1.234,50\xa0€" in body
        assert "Kreditkarte mit Endziffern 4242" in body
        assert "ORD-12345" in body and "INV-2025-1" in body
    assert "11.12.2025" in text  # the German date format
    assert "¥1,500" in mails["p_jp"]["Subject"] or "￥1,500" in mails["p_jp"]["Subject"]
    jp_text = _content(mails["p_jp"], "plain")
    assert "Order:" not in jp_text and "Invoice:" not in jp_text  # absent references are not invented
    assert "Debit card ending in 0005" in jp_text
    assert "KWD1.234" in mails["p_kw"]["Subject"].replace("\xa0", "")  # all three decimals of the dinar
    for mail in mails.values():  # nothing that looks like a card number beyond last4
        for part in ("plain", "html"):
            assert not re.search(r"\d{12,19}", _content(mail, part))


def test_html_escapes_customer_data(settings: Settings) -> None:
    notifications.add_customer(settings, "cus_x", "<script>alert(1)</script>", "x@example.com")
    feed(settings, SERVICE, [processed("p1", "1.00", "USD", customer_id="cus_x")])
    notifications.deliver_pending(settings)
    (mail,) = _maildir(settings)
    assert "<script>" not in _content(mail, "html")
    assert "&lt;script&gt;" in _content(mail, "html")


def test_maildir_crash_between_send_and_mark_delivers_one_file(settings: Settings,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    notifications.add_customer(settings, "cus_1", "Ann", "ann@example.com")
    feed(settings, SERVICE, [processed(f"p{i}", "3.00", "USD", customer_id="cus_1") for i in range(5)])

    def crash(conn: object, marks: object) -> None:
        raise KeyboardInterrupt("killed between send and mark")

    with monkeypatch.context() as m:
        m.setattr(delivery, "_apply_marks", crash)
        with pytest.raises(KeyboardInterrupt):
            notifications.deliver_pending(settings)
    assert len(_maildir(settings)) == 5
    assert notifications.summary(settings)["pending"] == 5
    # the lease has not expired: nobody else sends them meanwhile
    assert notifications.deliver_pending(settings).claimed == 0
    later = notifications.deliver_pending(settings, now=delivery.datetime.now(delivery.UTC) + timedelta(minutes=2))
    assert later.sent == 5
    mails = _maildir(settings)
    assert len(mails) == 5 and len({m["Message-ID"] for m in mails}) == 5
    assert notifications.summary(settings)["sent"] == 5


def test_smtp_url_parsing() -> None:
    c = notifications.parse_smtp_url("smtp://user%40x:p%3Ass@mail.example.com:2525?starttls=1&timeout=3")
    assert (c.host, c.port, c.security, c.username, c.password, c.timeout) == (
        "mail.example.com", 2525, "starttls", "user@x", "p:ss", 3.0)
    assert notifications.parse_smtp_url("smtps://mail.example.com").port == 465
    assert notifications.parse_smtp_url("smtp://mail.example.com").security == "plain"
    from payevents.errors import ConfigError

    for bad, rule in (("http://x", "scheme"), ("smtp://", "host"), ("smtp://h?tls=1", "unknown option"),
                      ("smtps://h?starttls=1", "implicit TLS"),
                      *((f"smtp://h?timeout={t}", f"timeout={t} must be a number of seconds above 0 and at most 300")
                        for t in ("0", "-1", "nan", "inf", "1e9", "soon"))):
        with pytest.raises(ConfigError, match=rule):
            notifications.parse_smtp_url(bad)


@pytest.mark.parametrize("sender", ["Zahlungen <zahlung@bänk.example>", "payments@x.example\r\nBcc: all@x.example",
                                    "no address at all", ""])
def test_a_sender_no_confirmation_could_carry_is_refused_before_the_worker_starts(settings: Settings,
                                                                                  sender: str) -> None:
    # PAYEVENTS_MAIL_FROM is in every confirmation's From: one the messages cannot carry made every e-mail fail for
    # good as unrenderable, each customer's confirmation lost to one setting
    from payevents.errors import ConfigError
    from payevents.services.notifications.delivery import check_settings

    with pytest.raises(ConfigError, match="PAYEVENTS_MAIL_FROM: "):
        check_settings(settings.replace(mail_from=sender))
    check_settings(settings.replace(mail_from="Payments <payments@bank.example>"))
    check_settings(settings)


def test_cli_customers_and_notifications(settings: Settings) -> None:
    from payevents.faces.cli import app

    env = {"PAYEVENTS_ENV": "dev", "PAYEVENTS_DATA_DIR": str(settings.data_dir), "COLUMNS": "200"}
    runner = CliRunner()
    res = runner.invoke(app, ["customers", "add", "cus_1", "--name", "Ann", "--email", "ann@example.com",
                              "--locale", "fr_FR"], env=env)
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["customers", "show", "cus_1", "--output", "json"], env=env)
    assert json.loads(res.stdout)["locale"] == "fr_FR"
    res = runner.invoke(app, ["customers", "list", "--format", "json"], env=env)
    assert [c["customer_id"] for c in json.loads(res.stdout)] == ["cus_1"]
    res = runner.invoke(app, ["customers", "add", "cus_2", "--name", "Bo", "--locale", "klingon"], env=env)
    assert res.exit_code != 0 and isinstance(res.exception, ContractError)

    feed(settings, SERVICE, [processed("p1", "5.00", "EUR", customer_id="cus_1"),
                             processed("p2", "6.00", "EUR", legacy=True)])
    res = runner.invoke(app, ["notifications", "deliver"], env=env)
    assert res.exit_code == 0 and "sent 1" in res.stdout, res.output
    res = runner.invoke(app, ["notifications", "list", "--status", "skipped", "--format", "json"], env=env)
    (skipped,) = json.loads(res.stdout)
    assert skipped["payment_id"] == "p2" and skipped["reason_code"] == "no_customer_id"
    res = runner.invoke(app, ["notifications", "list", "--status", "sent"], env=env)
    assert res.exit_code == 0 and "p1" in res.stdout and "ann@example.com" in res.stdout
    res = runner.invoke(app, ["notifications", "list", "--status", "lost"], env=env)
    assert res.exit_code != 0
    assert Path(notifications.maildir_path(settings), "new").is_dir()
