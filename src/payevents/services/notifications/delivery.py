"""Delivering the recorded confirmations: exactly one e-mail per payment event.

The consumer's transaction records each intent (``pending``). This worker claims due intents with a
lease, renders and sends them with a Message-ID derived from the eventId (uuid5), and marks them
``sent``. SMTP trouble reschedules with exponential backoff (``next_attempt_ms``); a permanent refusal
(5xx) marks the intent ``failed`` with the reason. A crash between send and mark leaves the lease to
expire, and the next worker re-sends once, with the same Message-ID. Maildir delivery (the embedded
default) names the file after the Message-ID, so there a re-send is a no-op.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import mailbox
import os
import smtplib
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Any, ClassVar, Final, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from payevents.contracts.events import PaymentProcessed
from payevents.errors import ConfigError
from payevents.runtime import bulk
from payevents.runtime.heap import peak_rss_kb, settle_heap
from payevents.runtime.procs import ProcessIdentity
from payevents.services.notifications.handlers import to_ms
from payevents.services.notifications.render import message_bytes, message_id_for, message_key, render_confirmation
from payevents.services.notifications.store import engine
from payevents.settings import Settings
from payevents.store.db import dialect, writer

log = logging.getLogger("payevents.notifications.delivery")


# -- transports ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    #: "plain", "starttls" or "tls" (implicit TLS, smtps://)
    security: str = "plain"
    username: str | None = None
    password: str | None = None
    timeout: float = 10.0
    #: CA bundle that signs the server's certificate (a private CA); None: the system trust store.
    #: The certificate is always verified: there is no option to turn that off.
    cafile: str | None = None


_TRUE = ("1", "true", "yes", "on")


#: the longest SMTP socket timeout a URL may ask for (each send is fenced by the intent's 60 s lease anyway)
MAX_SMTP_TIMEOUT_S = 300.0


def check_settings(settings: Settings) -> None:
    """What the notifications worker needs of the settings, checked before it starts (``ServiceDef.check``): a
    sender every confirmation can carry in its From (ASCII, one line, an address), and an SMTP URL it can use,
    when one is set. A sender the messages cannot carry would fail every confirmation for good."""
    sender = settings.mail_from
    address = parseaddr(sender)[1]
    if not sender.isascii() or "\n" in sender or "\r" in sender or "@" not in address:
        raise ConfigError(f"PAYEVENTS_MAIL_FROM: {sender!r} is not an ASCII e-mail address on one line"
                          " (Payments <payments@example.com>)")
    if settings.smtp_url:
        parse_smtp_url(settings.smtp_url.get_secret_value())


def parse_smtp_url(url: str) -> SmtpConfig:
    """``smtp://[user:pass@]host[:port][?starttls=1&timeout=10&cafile=/path/ca.pem]`` or ``smtps://...``
    (implicit TLS)."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise ConfigError(f"PAYEVENTS_SMTP_URL: scheme {parts.scheme!r} must be smtp or smtps")
    if not parts.hostname:
        raise ConfigError("PAYEVENTS_SMTP_URL: a host is required (smtp://host:port)")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"starttls", "timeout", "cafile"}
    if unknown:
        raise ConfigError(f"PAYEVENTS_SMTP_URL: unknown option(s) {', '.join(sorted(unknown))}"
                          " (known: starttls, timeout, cafile; certificate verification cannot be turned off)")
    cafile = query.get("cafile")
    if cafile is not None and not Path(cafile).is_file():
        raise ConfigError(f"PAYEVENTS_SMTP_URL: cafile {cafile!r} is not a file")
    starttls = query.get("starttls", "0").lower() in _TRUE
    if parts.scheme == "smtps" and starttls:
        raise ConfigError("PAYEVENTS_SMTP_URL: smtps:// is implicit TLS; starttls=1 applies to smtp:// only")
    try:
        port = parts.port or (465 if parts.scheme == "smtps" else 587 if starttls else 25)
    except ValueError as exc:
        raise ConfigError(f"PAYEVENTS_SMTP_URL: {exc}") from None
    raw_timeout = query.get("timeout", "10")
    try:
        timeout = float(raw_timeout)
    except ValueError:
        timeout = float("nan")
    if not 0 < timeout <= MAX_SMTP_TIMEOUT_S:  # NaN fails this too
        raise ConfigError(f"PAYEVENTS_SMTP_URL: timeout={raw_timeout} must be a number of seconds above 0 and at"
                          f" most {MAX_SMTP_TIMEOUT_S:g}")
    return SmtpConfig(
        host=parts.hostname,
        port=port,
        security="tls" if parts.scheme == "smtps" else "starttls" if starttls else "plain",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        timeout=timeout,
        cafile=cafile,
    )


class PermanentFailure(Exception):
    """The server refused this message for good (5xx): do not retry it."""


class TransientFailure(Exception):
    """This message could not be sent now (4xx): retry it later; the connection is still usable."""


@dataclasses.dataclass(frozen=True, slots=True)
class Outgoing:
    """One rendered confirmation: ``key`` is its Message-ID's uuid (the Maildir file name), ``data`` the
    message with ``\\n`` line ends."""

    key: str
    recipient: str
    data: bytes
    #: this is the intent's first claim (``attempts == 1``): no worker can have sent it before, since every send
    #: follows a committed claim and every claim counts an attempt
    first_attempt: bool = False


class Mailer(Protocol):
    #: True when delivering the same Message-ID twice has no effect (marks may then wait for the pass's end)
    idempotent: bool

    def send(self, mail: Outgoing) -> None: ...

    def close(self) -> None: ...


class SmtpMailer:
    """One SMTP session. Connection-level errors (OSError, SMTPServerDisconnected) propagate."""

    idempotent = False

    def __init__(self, config: SmtpConfig, mail_from: str) -> None:
        self.envelope_from = parseaddr(mail_from)[1] or mail_from
        context = ssl.create_default_context(cafile=config.cafile)
        self.smtp: smtplib.SMTP
        if config.security == "tls":
            self.smtp = smtplib.SMTP_SSL(config.host, config.port, timeout=config.timeout, context=context)
        else:
            self.smtp = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
        try:
            self.smtp.ehlo()
            if config.security == "starttls":
                self.smtp.starttls(context=context)
                self.smtp.ehlo()
            if config.username:
                self.smtp.login(config.username, config.password or "")
        except smtplib.SMTPAuthenticationError as exc:
            self.close()
            raise ConfigError(
                f"PAYEVENTS_SMTP_URL: the SMTP server refused the credentials ({exc.smtp_code})"
            ) from None
        except BaseException:
            self.close()
            raise

    def send(self, mail: Outgoing) -> None:
        try:
            # SMTP wants CRLF; the message is 7-bit (quoted-printable bodies, RFC 2047 headers), no bare CR
            self.smtp.sendmail(self.envelope_from, [mail.recipient], mail.data.replace(b"\n", b"\r\n"))
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            _raise_for(code, f"recipient refused: {code} {_s(text)}")
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            _raise_for(exc.smtp_code, f"{type(exc).__name__}: {exc.smtp_code} {_s(exc.smtp_error)}")

    def close(self) -> None:
        try:
            self.smtp.quit()
        except Exception:
            self.smtp.close()


def _s(text: bytes | str) -> str:
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)


def _raise_for(code: int, message: str) -> None:
    if 500 <= code < 600:
        raise PermanentFailure(message)
    raise TransientFailure(message)


class MaildirMailer:
    """Delivery into a Maildir folder; the file name is the Message-ID's uuid, so a re-send is a no-op.

    A file is made without a name (``O_TMPFILE`` in ``new/``), written, and linked into ``new/`` under its name
    (:meth:`_write_linked`): a reader never sees part of it, the link is the exclusive claim of the name (a file
    already there stays: the same message), and the one directory operation takes ``new/``'s lock once and only
    for the link — creating a file in ``tmp/`` and renaming it into ``new/`` took two directories' locks, held
    while the file system allocated the inode, which two writers of one Maildir spun on. Where the file system
    or ``/proc`` does not allow it, the file is written in ``tmp/`` and linked (a retry) or renamed (a first
    attempt) into ``new/``, as Maildir has it. An intent's first attempt is written without looking elsewhere:
    nothing can be there (see :attr:`Outgoing.first_attempt`). A retry — after a crash between the write and the
    mark, or a lease taken over — first looks in ``cur/`` (messages a reader has seen; listed once per pass, not
    once per message), so a message a reader has moved is not delivered again either.

    Each file is written as it is sent, in the pass's thread (two writer threads beside the rendering used ~25 %
    more CPU for the same wall time: every write's return waits for the GIL); a failed write is kept and the pass
    goes on writing, and :meth:`sync` raises the first failure (then nothing of the pass is marked, and its intents
    are retried after the lease) or else flushes the pass's files to disk once, before the pass marks them sent.
    One instance per pass."""

    idempotent = True
    #: the Maildirs this process found it cannot write nameless files into (their passes write in tmp/)
    _cannot_link: ClassVar[set[Path]] = set()

    def __init__(self, path: Path) -> None:
        self.path = path
        self._unsynced = False
        path.parent.mkdir(parents=True, exist_ok=True)
        mailbox.Maildir(str(path), create=True)  # creates tmp/ new/ cur/
        self._new = path / "new"
        self._tmp = path / "tmp"
        self._tmp_suffix = f".{os.getpid()}.{threading.get_ident()}"
        self._cur: set[str] | None = None
        self._failed: OSError | None = None
        #: the files are made nameless and linked (:meth:`_write_linked`) unless this system said it cannot
        self._linked = hasattr(os, "O_TMPFILE") and path not in MaildirMailer._cannot_link
        self._new_fd: int | None = None

    def seen(self, key: str) -> bool:
        """A reader has already moved this message to ``cur/``."""
        if self._cur is None:
            self._cur = {name.split(":", 1)[0] for name in os.listdir(self.path / "cur")}
        return key in self._cur

    def send(self, mail: Outgoing) -> None:
        # the same Message-ID always lands in the same file
        if not mail.first_attempt and self.seen(mail.key):
            return
        self._unsynced = True
        try:
            self._write(mail)
        except OSError as exc:
            if self._failed is None:
                self._failed = exc

    def _write(self, mail: Outgoing) -> None:
        if self._linked:
            try:
                self._write_linked(mail)
                return
            except _CannotLink as exc:
                log.info("Maildir %s: files are written in tmp/ and renamed (%s)", self.path, exc.__cause__)
                self._linked = False
                MaildirMailer._cannot_link.add(self.path)
        tmp = os.path.join(self._tmp, mail.key + self._tmp_suffix)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            try:
                _write_all(fd, mail.data)
            finally:
                os.close(fd)
        except OSError:  # e.g. a full disk: no part-written file stays in tmp/ (the retry writes it anew)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        target = os.path.join(self._new, mail.key)
        if mail.first_attempt:
            os.replace(tmp, target)
            return
        try:
            os.link(tmp, target)
        except FileExistsError:  # delivered before (in new/, not yet read)
            pass
        finally:
            os.unlink(tmp)

    def _write_linked(self, mail: Outgoing) -> None:
        """The file made without a name in ``new/``, written, then linked there under ``mail.key`` (``linkat`` of
        ``/proc/self/fd/N``, following it to the file). A name already there is kept (the same Message-ID is the
        same message); a failed write leaves nothing behind (a nameless file goes with its descriptor). Raises
        _CannotLink, having written nothing, where the file system or ``/proc`` does not allow it."""
        if self._new_fd is None:
            self._new_fd = os.open(self._new, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fd = os.open(self._new, os.O_WRONLY | os.O_TMPFILE, 0o666)
        except OSError as exc:
            if exc.errno in _NO_TMPFILE:
                raise _CannotLink from exc
            raise
        try:
            _write_all(fd, mail.data)
            try:
                os.link(f"/proc/self/fd/{fd}", mail.key, dst_dir_fd=self._new_fd, follow_symlinks=True)
            except FileExistsError:  # delivered before (in new/, not yet read)
                pass
            except OSError as exc:
                if exc.errno in _NO_PROC_LINK:
                    raise _CannotLink from exc
                raise
        finally:
            os.close(fd)

    def sync(self) -> None:
        """Raise the pass's first failed write, else flush its files to disk once (instead of one fsync per file),
        before they are marked sent."""
        failed, self._failed = self._failed, None
        if failed is not None:
            self._unsynced = False
            raise failed
        if self._unsynced:
            os.sync()
            self._unsynced = False

    def close(self) -> None:
        try:
            self.sync()
        finally:
            if self._new_fd is not None:
                os.close(self._new_fd)
                self._new_fd = None


#: ``open(O_TMPFILE)`` where the file system cannot make a nameless file (EOPNOTSUPP), or the kernel does not know
#: the flag (before Linux 3.11: EISDIR, or EINVAL)
_NO_TMPFILE: Final = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL})
#: ``linkat`` of ``/proc/self/fd/N`` where ``/proc`` is not mounted (ENOENT) or the link leads elsewhere (EXDEV)
_NO_PROC_LINK: Final = frozenset({errno.ENOENT, errno.EXDEV})


class _CannotLink(Exception):
    """This system cannot make a Maildir file nameless and link it (:meth:`MaildirMailer._write_linked`)."""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def maildir_path(settings: Settings) -> Path:
    return settings.data_dir / "maildir"


def open_mailer(settings: Settings) -> Mailer:
    """SMTP when ``settings.smtp_url`` is set, else the Maildir in the data directory."""
    if settings.smtp_url:
        return SmtpMailer(parse_smtp_url(settings.smtp_url.get_secret_value()), settings.mail_from)
    return MaildirMailer(maildir_path(settings))


# -- the worker ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class DeliveryReport:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    #: a delivery process's own peak resident memory in KiB when it sent the report (0: a pass in this process)
    peak_rss_kb: int = 0
    #: and its pid and the CPU seconds it has used so far
    pid: int = 0
    cpu_s: float = 0.0


@dataclasses.dataclass
class _Policy:
    base_backoff_s: float
    max_backoff_s: float
    max_attempts: int

    def backoff_ms(self, attempts: int) -> int:
        return int(min(self.max_backoff_s, self.base_backoff_s * 2 ** max(0, attempts - 1)) * 1000)


_event_decoder = msgspec.json.Decoder(PaymentProcessed)


@dataclasses.dataclass(frozen=True, slots=True)
class _Mark:
    """An outcome of a pass's intents: ``runtime.bulk.update_rows``'s ``assign`` and ``where`` (``{name}``: a
    mark's value) and the types of its values that are not text; each kind is one statement a pass."""

    assign: str
    where: str = "status = 'pending'"
    types: tuple[tuple[str, str], ...] = ()


_MARK_SENT: Final = _Mark("status = 'sent', sent_at = {at}, subject = {subject}, message_id = {message_id},"
                          " claim_token = NULL, claimed_until_ms = NULL, last_error = NULL")
_MARK_FAILED: Final = _Mark("status = 'failed', reason_code = {code}, reason = {reason}, last_error = {reason},"
                            " subject = {subject}, message_id = {message_id}, claim_token = NULL,"
                            " claimed_until_ms = NULL")
_MARK_RETRY: Final = _Mark("next_attempt_ms = {next}, last_error = {error}, subject = {subject},"
                           " message_id = {message_id}, claim_token = NULL, claimed_until_ms = NULL",
                           "status = 'pending' AND claim_token = {token}", (("next", "bigint"),))


_RENEW = sa.text(
    "UPDATE notifications SET claimed_until_ms = :until WHERE event_id = :event_id AND claim_token = :token"
    " AND status = 'pending'"
)


def _renew(eng: sa.Engine, event_id: str, token: str, until_ms: int) -> bool:
    """Extend this pass's lease on one intent just before it is sent; False when the pass no longer holds it."""
    with eng.begin() as conn:
        return conn.execute(_RENEW, {"until": until_ms, "event_id": event_id, "token": token}).rowcount == 1


def _apply_marks(conn: Connection, marks: Sequence[tuple[_Mark, dict[str, Any]]]) -> None:
    """Write the outcome of sent/failed/retried intents (one transaction, one statement per kind on PostgreSQL,
    one executemany per kind on SQLite: ``runtime.bulk.update_rows``)."""
    by_kind: dict[_Mark, list[dict[str, Any]]] = {}
    for kind, params in marks:
        by_kind.setdefault(kind, []).append(params)
    for kind, rows in by_kind.items():
        bulk.update_rows(conn, "notifications", "event_id", rows, assign=kind.assign, where=kind.where,
                         types=dict(kind.types))


def _claim(conn: Connection, limit: int, now_ms: int, lease_ms: int, token: str) -> list[Any]:
    """Lease up to ``limit`` due intents to ``token``: the due rows are picked and locked by one SELECT (PostgreSQL
    skips rows another worker holds; on SQLite ``conn`` is a :func:`payevents.store.db.writer` transaction, which
    holds the database's write lock from its BEGIN, so no other pass reads them in between), then leased by key
    (``runtime.bulk.update_rows``).

    It was one UPDATE of ``event_id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)``. PostgreSQL may run that as a
    nested loop that re-runs the locking subquery for every due row (it did wherever the table had no statistics
    yet), and each re-run, seeing the rows the statement had just leased as no longer due, locked the next ones: a
    pass leased the whole backlog instead of ``limit``, in O(backlog × limit) work (3.8 s of the server's CPU for a
    backlog of 5,000). Now the lock runs once and names at most ``limit`` rows."""
    due = ("status = 'pending' AND next_attempt_ms <= :now AND (claimed_until_ms IS NULL OR claimed_until_ms <= :now)")
    picked = conn.execute(
        sa.text(f"SELECT event_id FROM notifications WHERE {due} ORDER BY next_attempt_ms, event_id LIMIT :limit"
                f"{dialect(conn).skip_locked()}"),
        {"now": now_ms, "limit": limit},
    ).scalars().all()
    if not picked:
        return []
    bulk.update_rows(conn, "notifications", "event_id",
                     [{"event_id": e, "token": token, "until": now_ms + lease_ms} for e in picked],
                     assign="claim_token = {token}, claimed_until_ms = {until}, attempts = attempts + 1",
                     types={"until": "bigint"})
    return list(conn.execute(
        sa.text("SELECT event_id, payment_id, recipient, recipient_name, locale, event_json, attempts, created_at"
                " FROM notifications WHERE claim_token = :token ORDER BY next_attempt_ms, event_id"),
        {"token": token},
    ).all())


def deliver_pending(
    settings: Settings,
    limit: int = 100,
    *,
    now: datetime | None = None,
    lease_s: float = 60.0,
    base_backoff_s: float = 2.0,
    max_backoff_s: float = 600.0,
    max_attempts: int = 20,
) -> DeliveryReport:
    """Send up to ``limit`` due confirmations once; returns what happened.

    ``now`` (aware UTC) defaults to the clock; tests pass a later time to skip a backoff.
    """
    if settings.smtp_url:
        # a malformed URL is an error now, before anything is claimed
        parse_smtp_url(settings.smtp_url.get_secret_value())
    now = now or datetime.now(UTC)
    now_ms = to_ms(now)
    policy = _Policy(base_backoff_s, max_backoff_s, max_attempts)
    eng = engine(settings)
    token = uuid.uuid4().hex
    lease_ms = int(lease_s * 1000)
    started = time.monotonic()

    def pass_ms() -> int:  # the pass's clock: ``now`` plus the time the pass has taken so far
        return now_ms + int((time.monotonic() - started) * 1000)

    with writer(eng).begin() as conn:
        rows = _claim(conn, limit, now_ms, lease_ms, token)
    if not rows:
        return DeliveryReport()

    sent = retried = failed = 0
    marks: list[tuple[_Mark, dict[str, Any]]] = []
    mailer: Mailer | None = None

    def flush() -> None:
        if isinstance(mailer, MaildirMailer):
            mailer.sync()
        if marks:
            with eng.begin() as conn:
                _apply_marks(conn, marks)
            marks.clear()

    def retry_or_fail(row: Any, error: str, subject: str | None, message_id: str | None) -> None:
        nonlocal retried, failed
        if row.attempts >= policy.max_attempts:
            failed += 1
            marks.append((_MARK_FAILED, {"event_id": row.event_id, "code": "gave_up", "subject": subject,
                                         "message_id": message_id,
                                         "reason": f"gave up after {row.attempts} attempts: {error}"}))
        else:
            retried += 1
            marks.append((_MARK_RETRY, {"event_id": row.event_id, "token": token, "error": error[:2000],
                                        "next": now_ms + policy.backoff_ms(row.attempts), "subject": subject,
                                        "message_id": message_id}))

    try:
        mailer = open_mailer(settings)
    except (OSError, smtplib.SMTPException, ConfigError) as exc:  # down, or refusing our credentials
        what = "SMTP" if settings.smtp_url else "Maildir"
        error = f"{what} unavailable: {type(exc).__name__}: {exc}"
        log.warning("%s; %d e-mail(s) rescheduled", error, len(rows))
        for row in rows:
            retry_or_fail(row, error, None, None)
        flush()
        return DeliveryReport(claimed=len(rows), retried=retried, failed=failed)

    try:
        for i, row in enumerate(rows):
            message_id = message_id_for(row.event_id, settings.mail_from)
            try:
                event = _event_decoder.decode(row.event_json)
                mail = render_confirmation(event, row.recipient_name or "", row.locale or "en_US", settings.mail_from)
                data = message_bytes(event_id=row.event_id, payment_id=row.payment_id, mail_from=settings.mail_from,
                                     recipient=row.recipient, recipient_name=row.recipient_name,
                                     subject=mail.subject, text=mail.text, html=mail.html, created_at=row.created_at)
            except Exception as exc:  # the stored intent cannot become an e-mail; retrying will not change that
                log.error("notification %s cannot be rendered: %s: %s", row.event_id, type(exc).__name__, exc,
                          extra={"eventId": row.event_id, "paymentId": row.payment_id, "outcome": "failed"})
                failed += 1
                marks.append((_MARK_FAILED, {"event_id": row.event_id, "code": "unrenderable", "subject": None,
                                             "message_id": message_id,
                                             "reason": f"cannot render the e-mail: {type(exc).__name__}: {exc}"}))
                continue
            if not mailer.idempotent and not _renew(eng, row.event_id, token, pass_ms() + lease_ms):
                continue  # this pass outlived its lease and another worker took the intent over: it sends it
            try:
                mailer.send(Outgoing(key=message_key(row.event_id), recipient=row.recipient, data=data,
                                     first_attempt=row.attempts == 1))
            except PermanentFailure as exc:
                failed += 1
                marks.append((_MARK_FAILED, {"event_id": row.event_id, "code": "smtp_rejected", "reason": str(exc),
                                             "subject": mail.subject, "message_id": message_id}))
            except TransientFailure as exc:
                retry_or_fail(row, str(exc), mail.subject, message_id)
            except (OSError, smtplib.SMTPException) as exc:
                # the connection is gone: this one and the rest wait for the next attempt
                error = f"SMTP connection lost: {type(exc).__name__}: {exc}"
                log.warning("%s; %d e-mail(s) rescheduled", error, len(rows) - i)
                for rest in rows[i:]:
                    retry_or_fail(rest, error, None, None)
                break
            else:
                sent += 1
                marks.append((_MARK_SENT, {"event_id": row.event_id, "at": datetime.now(UTC).isoformat(),
                                           "subject": mail.subject, "message_id": message_id}))
            if not mailer.idempotent:
                flush()  # keep the send-but-not-marked window to one message
    finally:
        try:
            flush()
        finally:
            mailer.close()
    return DeliveryReport(claimed=len(rows), sent=sent, retried=retried, failed=failed)


#: e-mails per pass: the claim, the Maildir sync and the marks are per pass (1,000 amortize them ~2x better than
#: 500; a pass still takes a few seconds, far inside the 60 s lease)
PASS_LIMIT = 1000


def _beat(component: str = "delivery") -> None:
    from payevents.runtime.workers import beat

    beat(component)


def _component(slot: int) -> str:
    """The name a delivery process's loop beats under in its worker's liveness (``/livez``, ``progressAges``)."""
    return "delivery" if slot == 1 else f"delivery-{slot}"


#: the peak resident memory (KiB) each delivery process of this worker reported, by its liveness name
PEAK_RSS_KB: dict[str, int] = {}
#: the CPU seconds each delivery process of this worker has used, by pid, as of its last pass (a process forked
#: from the fork server is not this worker's child: its CPU is not in this process's RUSAGE_CHILDREN)
CPU_S: dict[int, float] = {}


def count_pass(report: DeliveryReport, component: str = "delivery") -> None:
    """A pass's outcomes in this process's metrics (a delivery process's peak memory too), and the delivery loop's
    liveness beat."""
    from payevents.runtime import metrics

    for outcome in ("sent", "retried", "failed"):
        if getattr(report, outcome):
            metrics.EMAILS.labels(outcome=outcome).inc(getattr(report, outcome))
    metrics.DELIVERY_PASS.set(time.time())
    if report.peak_rss_kb > PEAK_RSS_KB.get(component, 0):
        PEAK_RSS_KB[component] = report.peak_rss_kb
        metrics.DELIVERY_PEAK_RSS.labels(process=component).set(report.peak_rss_kb * 1024)
    if report.pid:
        CPU_S[report.pid] = report.cpu_s
    _beat(component)


def run_delivery(settings: Settings, stop: threading.Event, *, interval_s: float = 0.5, limit: int = PASS_LIMIT,
                 on_pass: Callable[[DeliveryReport], None] = count_pass, on_beat: Callable[[], None] = _beat,
                 until_idle: bool = False) -> None:
    """Deliver in this thread until ``stop`` is set, in passes of up to ``limit`` e-mails; ``on_pass`` gets each
    pass's report (by default: this process's metrics and liveness), ``on_beat`` is called at each turn of the
    loop, a failed pass's too (by default: this process's liveness): a loop that retries a store that is down
    is not stuck. ``until_idle``: return after a pass that found nothing due (a delivery process that joined for
    a backlog: :func:`run_delivery_processes`)."""
    from payevents.runtime.backoff import is_transient

    log.info("notification delivery started (%s)", "SMTP" if settings.smtp_url else f"Maildir {maildir_path(settings)}")
    while not stop.is_set():
        on_beat()
        try:
            report = deliver_pending(settings, limit)
        except Exception as exc:
            if is_transient(exc):  # the store is unreachable: one line, no traceback
                log.warning("notification delivery pass failed (%s: %s); retrying in %.1f s", type(exc).__name__,
                            str(exc).strip().splitlines()[0] if str(exc).strip() else "", interval_s * 4)
            else:
                log.exception("notification delivery pass failed; retrying in %.1f s", interval_s * 4)
            stop.wait(interval_s * 4)
            continue
        on_pass(report)
        if until_idle and not report.claimed:
            return
        if report.claimed < limit:
            stop.wait(interval_s)


#: full passes in a row (of any of a worker's delivery processes) that show a backlog: one that outlasted a whole
#: pass, not the burst a pass after the delivery's wait finds
BACKLOG_PASSES = 2
#: idle CPUs (over the last pass) another delivery process needs to join a backlog
SPARE_CPUS = 0.5


class CpuMeter:
    """The host's idle CPUs between two readings of ``/proc/stat`` (idle and I/O wait time); None where there is
    no such file (not Linux)."""

    def __init__(self, path: str = "/proc/stat") -> None:
        self.path = path
        self._last = self._read()

    def _read(self) -> tuple[int, int, int] | None:
        """(idle ticks, all ticks, CPUs) of the host so far."""
        try:
            with open(self.path, "rb") as f:
                lines = f.read().split(b"\n")
        except OSError:
            return None
        ticks = [int(v) for v in lines[0].split()[1:]]
        cpus = sum(1 for line in lines[1:] if line[:3] == b"cpu" and line[3:4].isdigit())
        return ticks[3] + (ticks[4] if len(ticks) > 4 else 0), sum(ticks[:8]), max(1, cpus)

    def spare(self) -> float | None:
        """Idle CPUs on average since the previous call (or the meter's start); None: not measurable here."""
        now, last = self._read(), self._last
        self._last = now
        if now is None or last is None or now[1] <= last[1]:
            return None
        return (now[0] - last[0]) / (now[1] - last[1]) * now[2]


class _Scaler:
    """A worker's delivery processes (:func:`run_delivery_processes`): the first runs while the worker runs; the
    others, up to ``settings.delivery_processes``, join one at a time while a backlog lasts (:data:`BACKLOG_PASSES`
    full passes in a row) and a CPU is idle for them (:data:`SPARE_CPUS`: on a host whose CPUs are busy, say with
    the consumers and the payments' own path, another process would only take time from them), and leave after a
    pass that found nothing due."""

    def __init__(self, settings: Settings, stop: threading.Event, interval_s: float, limit: int) -> None:
        self.settings, self.stop, self.interval_s, self.limit = settings, stop, interval_s, limit
        self._lock = threading.Lock()
        self._running = {1}
        self._full = 0
        self._threads: list[threading.Thread] = []
        self.cpu = CpuMeter()

    def passed(self, report: DeliveryReport) -> None:
        """A pass's report (from any of the processes): another process joins a backlog where a CPU is idle."""
        with self._lock:
            self._full = self._full + 1 if report.claimed >= self.limit else 0
            spare = self.cpu.spare()
            free = sorted(set(range(2, self.settings.delivery_processes + 1)) - self._running)
            if (self._full < BACKLOG_PASSES or not free or self.stop.is_set()
                    or (spare is not None and spare < SPARE_CPUS)):
                return
            slot = free[0]
            self._running.add(slot)
            self._full = 0
            thread = threading.Thread(target=self._extra, args=(slot,), name=f"delivery-{slot}", daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        log.info("notification delivery: a backlog (%d full passes of %d in a row; %s); starting delivery process %d"
                 " of up to %d", BACKLOG_PASSES, self.limit,
                 "no CPU reading here" if spare is None else f"{spare:.1f} CPUs idle", slot,
                 self.settings.delivery_processes)
        thread.start()

    def join(self) -> None:
        """Wait for the processes that joined to stop (``stop`` is set)."""
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join()

    def _extra(self, slot: int) -> None:
        try:
            run_delivery_process(self.settings, self.stop, interval_s=self.interval_s, limit=self.limit, slot=slot,
                                 on_report=self.passed, until_idle=True)
        finally:
            with self._lock:
                self._running.discard(slot)
            from payevents.runtime.workers import forget

            forget(_component(slot))  # gone on purpose: not a loop that stopped making progress


def run_delivery_processes(settings: Settings, stop: threading.Event, *, interval_s: float = 0.5,
                           limit: int = PASS_LIMIT) -> None:
    """The service's background worker: up to ``settings.delivery_processes`` delivery processes
    (:func:`run_delivery_process`), each supervised from a thread of its own — this one for the first — until
    ``stop`` is set. The first runs throughout; each other one joins while a backlog lasts (:class:`_Scaler`) and
    leaves once its pass finds nothing due. Each claims its own passes (the claim is exclusive, as between the
    delivery processes of several notifications workers), beats under its own name in the worker's liveness
    (``delivery``, ``delivery-2``, …) while it runs and counts in its metrics."""
    scaler = _Scaler(settings, stop, interval_s, limit)
    try:
        run_delivery_process(settings, stop, interval_s=interval_s, limit=limit,
                             on_report=scaler.passed if settings.delivery_processes > 1 else None)
    finally:
        scaler.join()


def run_delivery_process(settings: Settings, stop: threading.Event, *, interval_s: float = 0.5,
                         limit: int = PASS_LIMIT, slot: int = 1,
                         on_report: Callable[[DeliveryReport], None] | None = None, until_idle: bool = False) -> None:
    """The service's background worker: :func:`run_delivery` in a child process, supervised from this thread
    until ``stop`` is set. In its own interpreter, rendering and writing e-mails does not take the GIL from the
    consumer next to it (on two cores the consumer ran at about half its speed while the delivery worked).
    The child's passes count in this process's metrics and liveness (``/livez`` sees a stuck child), its log
    records are logged here, it is restarted if it dies, and it stops by itself when this process dies.
    Exactly-once is the claim's and the Maildir's, as in a thread: a killed child is a crash mid-pass.
    Where a child cannot be started (a daemonic process), the delivery runs in this thread. ``slot``: which of the
    worker's delivery processes this is (:func:`run_delivery_processes`; its name and liveness beat);
    ``on_report`` also gets each of its passes' reports; ``until_idle``: the child ends after a pass that found
    nothing due, and so does this supervision (a process that joined for a backlog, not restarted)."""
    from payevents.runtime import procs, workers

    component = _component(slot)

    def relay_report(report: DeliveryReport) -> None:
        count_pass(report, component)
        if on_report is not None:
            on_report(report)

    ctx = procs.child_context()  # the fork server this worker came from, else spawn
    me = ProcessIdentity.of(os.getpid())
    while not stop.is_set():
        # what the child sends (reports, beats, log records) comes on a pipe whose write end only the child
        # holds: a child killed half-way through a message ends the pipe (EOFError here) instead of leaving this
        # thread waiting for the rest of it, as a multiprocessing Queue (its write end kept here too) did
        events, to_parent = ctx.Pipe(duplex=False)
        channel = _ToParent(to_parent)
        # the child's stop is a pipe, not an Event: setting an Event waits for every waiter to wake, and a
        # SIGKILLed child never does; the child also stops when the pipe closes (this process died)
        stop_reader, stop_writer = ctx.Pipe(duplex=False)
        _beat(component)  # the child's clock starts now: one stuck before its first pass is not live either
        try:
            proc = procs.start(ctx, _delivery_child, name=f"payevents-notifications-{component}", daemon=True,
                               args=(settings, stop_reader, channel, me, logging.getLogger().getEffectiveLevel(),
                                     interval_s, limit, until_idle))
        except AssertionError:  # "daemonic processes are not allowed to have children"
            events.close()
            stop_writer.close()
            if until_idle:  # no process to add: the first one's thread carries the backlog alone
                return
            run_delivery(settings, stop, interval_s=interval_s, limit=limit,
                         on_pass=lambda report: count_pass(report, component), on_beat=lambda: _beat(component))
            return
        finally:
            stop_reader.close()
            to_parent.close()
        if proc.pid is not None:  # for the supervisor, which kills it with this process (runner.kill_tree)
            workers.adopt(component, ProcessIdentity.of(proc.pid))
        ended = False  # the child's end of the pipe is closed: it exited, or was killed
        try:
            while not stop.is_set() and not ended:
                ended = not _relay_from(events, 0.2, component, relay_report)
        finally:
            with contextlib.suppress(OSError):
                stop_writer.send_bytes(b"stop")
            stop_writer.close()
            deadline = time.monotonic() + 15
            while not ended and time.monotonic() < deadline:  # what it sends until it ends is still relayed
                ended = not _relay_from(events, 0.1, component, relay_report)
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
            workers.disown(component)
            events.close()
        if until_idle:
            if proc.exitcode == 0:
                log.info("notification %s process stopped: no backlog left", component)
            elif not stop.is_set():
                log.warning("notification %s process exited (code %s); another joins while a backlog lasts",
                            component, proc.exitcode)
            return
        if not stop.is_set():
            log.warning("notification delivery process exited (code %s); restarting it in %.1f s", proc.exitcode,
                        interval_s * 4)
            stop.wait(interval_s * 4)


#: seconds a delivery child may take to finish its pass once stopped (or orphaned) before it exits regardless
ORPHAN_GRACE_S = 30.0
#: what the delivery child sends for a beat of its loop
_BEAT = "beat"


def _relay(item: Any, component: str, on_report: Callable[[DeliveryReport], None]) -> None:
    """One item from the delivery child: a pass's report (to ``on_report``), a beat of its loop, or a log record."""
    if isinstance(item, DeliveryReport):
        on_report(item)
    elif item == _BEAT:
        _beat(component)
    elif isinstance(item, logging.LogRecord):
        logging.getLogger(item.name).handle(item)


def _relay_from(events: Any, timeout: float, component: str, on_report: Callable[[DeliveryReport], None]) -> bool:
    """Relay what the delivery child sent within ``timeout`` s, if anything; False once the child's end of the
    pipe is closed (it exited or was killed, perhaps half-way through a message, which is not relayed)."""
    try:
        if events.poll(timeout):
            _relay(events.recv(), component, on_report)
    except (EOFError, OSError):
        return False
    return True


class _ToParent:
    """The delivery child's side of its pipe, shared by its threads (log records come from any of them): one
    whole message at a time; what a QueueHandler and the pass's callbacks put to."""

    def __init__(self, conn: Any) -> None:
        self._conn, self._lock = conn, threading.Lock()

    def __getstate__(self) -> Any:
        return self._conn

    def __setstate__(self, conn: Any) -> None:
        self._conn, self._lock = conn, threading.Lock()

    def put(self, item: Any) -> None:
        with self._lock:
            self._conn.send(item)

    put_nowait = put  # what logging.handlers.QueueHandler calls


def _delivery_child(settings: Settings, stop: Any, events: Any, parent: ProcessIdentity, level: int,
                    interval_s: float, limit: int, until_idle: bool = False) -> None:
    """The delivery child's main: passes until ``stop`` is set or its parent is gone (or, ``until_idle``, a pass
    found nothing due); reports and log records go to ``events``."""
    import logging.handlers
    import signal

    # Ctrl-C in a terminal reaches the whole process group: the supervisor stops this child through the pipe
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(events)]
    root.setLevel(level)
    done = threading.Event()

    def watch() -> None:  # the worker's stop, or its death (the pipe closes; it is gone)
        while not done.is_set():
            try:
                if stop.poll(0.25) or not parent.alive():
                    done.set()
            except (OSError, EOFError):
                done.set()
        # A pass ends within seconds; one that does not (stuck on a silent connection) must not outlive the
        # worker that was killed for it, nobody else would ever stop this process.
        time.sleep(ORPHAN_GRACE_S)
        log.error("notification delivery did not stop within %.0f s of being told to; exiting", ORPHAN_GRACE_S)
        os._exit(1)

    threading.Thread(target=watch, name="delivery-watch", daemon=True).start()

    def on_pass(report: DeliveryReport) -> None:
        events.put(dataclasses.replace(report, peak_rss_kb=peak_rss_kb(), pid=os.getpid(), cpu_s=time.process_time()))
        if report.claimed:  # the first pass that rendered something has loaded the templates and locale data
            settle_heap()

    run_delivery(settings, done, interval_s=interval_s, limit=limit, on_pass=on_pass,
                 on_beat=lambda: events.put(_BEAT), until_idle=until_idle)


def next_due_in(settings: Settings, now: datetime | None = None) -> timedelta | None:
    """Time until the next pending e-mail is due (None when nothing is pending)."""
    now = now or datetime.now(UTC)
    with engine(settings).connect() as conn:
        ms = conn.execute(sa.text("SELECT MIN(next_attempt_ms) FROM notifications WHERE status = 'pending'")).scalar()
    if ms is None:
        return None
    return max(timedelta(0), timedelta(milliseconds=int(ms) - to_ms(now)))
