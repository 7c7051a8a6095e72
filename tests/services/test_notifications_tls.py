"""Notifications over encrypted SMTP against live aiosmtpd servers on loopback: STARTTLS with AUTH,
implicit TLS (smtps://), and a server certificate the client does not trust (or no STARTTLS at all),
where nothing may leave in plain text.

The client verifies the server certificate with ``ssl.create_default_context()``; a private CA is
trusted the documented OpenSSL way, ``SSL_CERT_FILE`` (read when the context is created). The test
certificate is made by the ``openssl`` command line tool, self-signed for localhost and 127.0.0.1.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest_an import SmtpSink, feed, processed

from ci_rule import missing
from payevents.errors import ConfigError
from payevents.services import notifications
from payevents.services.notifications.delivery import parse_smtp_url
from payevents.services.notifications.render import message_id_for
from payevents.services.notifications.service import SERVICE
from payevents.settings import Settings

LOGIN, PASSWORD = "mailer", "s3cr:t"  # the colon is percent-encoded in the URL
USER_INFO = "mailer:s3cr%3At"


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(certificate, key): self-signed, CN=localhost, SAN DNS:localhost and IP:127.0.0.1, valid one day."""
    openssl = shutil.which("openssl")
    if openssl is None:
        missing("openssl")
    d = tmp_path_factory.mktemp("smtp-tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [str(openssl), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


@pytest.fixture
def server_ctx(tls_cert: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*tls_cert)
    return ctx


@pytest.fixture
def trust_test_ca(tls_cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_cert[0]))


@pytest.fixture(autouse=True)
def _system_trust_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test from the system trust store (the test CA untrusted)."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


class TlsSink(SmtpSink):
    """An SmtpSink that checks credentials and records, per AUTH attempt and per message, the TLS
    version of the connection it arrived on (None: plain text)."""

    def __init__(self, **controller_kw: Any) -> None:
        super().__init__(authenticator=self._authenticate, **controller_kw)
        self.auth_attempts: list[tuple[str, str | None, bool]] = []  # (login, tls version, accepted)
        self.message_tls: list[str | None] = []

    @staticmethod
    def _tls_version(server: Any) -> str | None:
        ssl_object = server.transport.get_extra_info("ssl_object") if server.transport else None
        return ssl_object.version() if ssl_object is not None else None

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (LOGIN.encode(), PASSWORD.encode())
        login = data.login.decode() if isinstance(data, LoginPassword) else repr(data)
        with self._lock:
            self.auth_attempts.append((login, self._tls_version(server), ok))
        return AuthResult(success=ok, handled=False)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.message_tls.append(self._tls_version(server))
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def starttls_sink(server_ctx: ssl.SSLContext) -> Iterator[TlsSink]:
    sink = TlsSink(tls_context=server_ctx, require_starttls=True, auth_require_tls=True, auth_required=True)
    sink.start()
    yield sink
    sink.stop()


def _smtps_sink(server_ctx: ssl.SSLContext) -> TlsSink:
    """Implicit TLS: aiosmtpd's ``ssl_context`` wraps the listening socket. aiosmtpd 1.4 counts only STARTTLS
    as TLS for ``auth_require_tls`` (aio-libs/aiosmtpd#281, #274: AUTH is never offered over SMTPS), so here it
    is off; the authenticator records the TLS version each login arrived on instead."""
    return TlsSink(ssl_context=server_ctx, auth_require_tls=False, auth_required=True)


@pytest.fixture
def tls_sink(server_ctx: ssl.SSLContext) -> Iterator[TlsSink]:
    sink = _smtps_sink(server_ctx)
    sink.start()
    yield sink
    sink.stop()


def _customers(settings: Settings) -> dict[str, str]:
    emails = {"cus_a": "ann@example.com", "cus_b": "bob@example.org"}
    for cid, addr in emails.items():
        notifications.add_customer(settings, cid, cid.upper(), addr, "en_US")
    return emails


def _payments(n: int) -> list[Any]:
    """n payments, alternately to cus_a and cus_b."""
    return [processed(f"pay_{i}", f"{i + 1}.50", "USD", customer_id="cus_a" if i % 2 == 0 else "cus_b")
            for i in range(n)]


def _assert_delivered_once(sink: TlsSink, settings: Settings, events: list[Any], emails: dict[str, str]) -> None:
    got = sink.received()
    assert len(got) == len(events)
    by_payment = {m["X-Payevents-Payment-Id"]: m for m in got}
    assert len(by_payment) == len(events)
    for i, ev in enumerate(events):
        m = by_payment[f"pay_{i}"]
        assert m.rcpt_tos == [emails["cus_a" if i % 2 == 0 else "cus_b"]]
        assert m["Subject"] == f"Payment confirmation: ${i + 1}.50"
        assert m["Message-ID"] == message_id_for(ev.event_id, settings.mail_from)
    sent = notifications.list_notifications(settings, status="sent")
    assert len(sent) == len(events) and all(n.attempts == 1 for n in sent)


def test_starttls_with_auth_one_message_per_payment(
    settings: Settings, starttls_sink: TlsSink, trust_test_ca: None
) -> None:
    import smtplib

    sink = starttls_sink
    # the server's side of the bargain: no AUTH offered or accepted before STARTTLS
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=5) as probe:
        probe.ehlo()
        assert probe.has_extn("starttls") and not probe.has_extn("auth")
        # AUTH is not advertised (auth_require_tls) and, tried anyway, refused before the authenticator is asked
        code, text = probe.docmd("AUTH", "PLAIN AG1haWxlcgBzM2NyOnQ=")  # \0mailer\0s3cr:t, in clear on purpose
        assert (code, text) == (530, b"Must issue a STARTTLS command first")
        code, _ = probe.docmd("MAIL", "FROM:<payments@payevents.local>")
        assert code == 530  # require_starttls: no mail in plain text either
    assert sink.auth_attempts == []

    settings = settings.replace(smtp_url=f"smtp://{USER_INFO}@127.0.0.1:{sink.port}?starttls=1&timeout=5")
    emails = _customers(settings)
    events = _payments(4)
    feed(settings, SERVICE, events + events[1:3])  # duplicates: still one intent per payment
    r = notifications.deliver_pending(settings)
    assert (r.claimed, r.sent, r.retried, r.failed) == (4, 4, 0, 0)
    assert notifications.deliver_pending(settings, now=datetime.now(UTC) + timedelta(hours=1)).claimed == 0

    _assert_delivered_once(sink, settings, events, emails)
    # credentials went over TLS only (one login per delivery pass), and every message did too
    assert [(login, ok) for login, _, ok in sink.auth_attempts] == [(LOGIN, True)]
    assert all(v is not None and v.startswith("TLSv1.") for _, v, _ in sink.auth_attempts)
    assert len(sink.message_tls) == 4 and all(v is not None and v.startswith("TLSv1.") for v in sink.message_tls)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls_smtps_with_auth(settings: Settings, tls_sink: TlsSink, tls_cert: tuple[Path, Path]) -> None:
    """The private CA given as ?cafile= (just for SMTP), not through the process-wide SSL_CERT_FILE."""
    sink = tls_sink
    settings = settings.replace(smtp_url=f"smtps://{USER_INFO}@127.0.0.1:{sink.port}?timeout=5&cafile={tls_cert[0]}")
    emails = _customers(settings)
    events = _payments(3)
    feed(settings, SERVICE, events + events)
    assert notifications.deliver_pending(settings).sent == 3
    _assert_delivered_once(sink, settings, events, emails)
    assert [(login, ok) for login, _, ok in sink.auth_attempts] == [(LOGIN, True)]
    assert all(v is not None and v.startswith("TLSv1.") for v in [*sink.message_tls, sink.auth_attempts[0][1]])


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize("mode", ["starttls", "smtps"])
def test_untrusted_certificate_is_retried_with_the_reason_and_nothing_leaves_in_clear(
    settings: Settings, server_ctx: ssl.SSLContext, tls_cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    if mode == "starttls":
        sink = TlsSink(tls_context=server_ctx, require_starttls=True, auth_require_tls=True, auth_required=True)
        url = f"smtp://{USER_INFO}@127.0.0.1:{sink.port}?starttls=1&timeout=5"
    else:
        sink = _smtps_sink(server_ctx)
        url = f"smtps://{USER_INFO}@127.0.0.1:{sink.port}?timeout=5"
    sink.start()
    try:
        settings = settings.replace(smtp_url=url)
        emails = _customers(settings)
        events = _payments(2)
        feed(settings, SERVICE, events)

        t0 = datetime.now(UTC)
        r = notifications.deliver_pending(settings, now=t0)  # system trust store only: the test CA is unknown
        assert (r.claimed, r.sent, r.retried, r.failed) == (2, 0, 2, 0)
        pending = notifications.list_notifications(settings, status="pending")
        assert len(pending) == 2
        for n in pending:
            assert "SMTP unavailable: SSLCertVerificationError" in (n.last_error or "")
            assert "certificate verify failed" in (n.last_error or "")
        assert sink.received() == [] and sink.auth_attempts == [] and sink.message_tls == []

        # once the operator trusts the CA (?cafile=), the same intents go out, once each
        settings = settings.replace(smtp_url=f"{url}&cafile={tls_cert[0]}")
        r = notifications.deliver_pending(settings, now=t0 + timedelta(minutes=1))
        assert (r.claimed, r.sent) == (2, 2)
        got = sink.received()
        assert sorted(m["Message-ID"] for m in got) == sorted(message_id_for(e.event_id, settings.mail_from)
                                                               for e in events)
        assert sorted(m.rcpt_tos[0] for m in got) == sorted(emails.values())
        assert {n.attempts for n in notifications.list_notifications(settings, status="sent")} == {2}
    finally:
        sink.stop()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_starttls_required_but_not_offered_never_falls_back_to_plain(settings: Settings) -> None:
    """A server (or a man in the middle) that drops STARTTLS from its EHLO, and offers AUTH in clear:
    the client must neither log in nor send."""
    sink = TlsSink(auth_require_tls=False, auth_required=True)
    sink.start()
    try:
        settings = settings.replace(smtp_url=f"smtp://{USER_INFO}@127.0.0.1:{sink.port}?starttls=1&timeout=5")
        _customers(settings)
        feed(settings, SERVICE, _payments(1))
        r = notifications.deliver_pending(settings)
        assert (r.claimed, r.sent, r.retried) == (1, 0, 1)
        (pending,) = notifications.list_notifications(settings, status="pending")
        assert "STARTTLS extension not supported" in (pending.last_error or "")
        assert sink.auth_attempts == [] and sink.received() == []
    finally:
        sink.stop()


def test_certificate_verification_cannot_be_turned_off(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be turned off"):
        parse_smtp_url("smtps://mail.example.com?verify=0")
    with pytest.raises(ConfigError, match="cafile"):
        parse_smtp_url(f"smtps://mail.example.com?cafile={tmp_path / 'missing.pem'}")


def test_ssl_cert_file_is_read_when_the_context_is_created(tls_cert: tuple[Path, Path],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The premise of trusting a private CA: ssl.create_default_context() honours SSL_CERT_FILE."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_cert[0]))
    cas = ssl.create_default_context().get_ca_certs()
    assert [c["subject"] for c in cas] == [((("commonName", "localhost"),),)]
