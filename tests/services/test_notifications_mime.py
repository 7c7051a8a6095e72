"""The hand-written MIME writer (``render.message_bytes``, kept because it is cheaper than building each message
with the ``email`` package) writes only messages the standard library parses without a defect, and with the
same headers and bodies: checked over arbitrary names, subjects and bodies."""

from __future__ import annotations

import email
import email.policy
import uuid
from email.message import EmailMessage

from hypothesis import given, settings
from hypothesis import strategies as st

from payevents.services.notifications.render import message_bytes

text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=120)
multiline = st.lists(text, min_size=1, max_size=6).map("\n".join)


def _defects(msg: EmailMessage) -> list[object]:
    found: list[object] = []
    for part in msg.walk():
        found += list(part.defects)
        for name in part.keys():
            found += list(getattr(part[name], "defects", ()))
    return found


@settings(max_examples=150, deadline=None)
@given(name=text, subject=text, body=multiline, html=st.one_of(st.none(), multiline))
def test_every_message_it_writes_parses_without_a_defect(name: str, subject: str, body: str, html: str | None) -> None:
    event_id = str(uuid.uuid4())
    raw = message_bytes(event_id=event_id, payment_id="pay_1", mail_from="payments@payevents.local",
                        recipient="someone@example.com", recipient_name=name, subject=subject, text=body,
                        html=html, created_at="2026-11-30T12:00:00+00:00")
    for policy in (email.policy.SMTP, email.policy.default):
        msg = email.message_from_bytes(raw, policy=policy)
        assert isinstance(msg, EmailMessage)
        assert _defects(msg) == [], _defects(msg)
        assert str(msg["Subject"]).split() == subject.split()  # up to how whitespace folds
        [to] = msg["To"].addresses
        assert to.addr_spec == "someone@example.com"
        # the name, up to whitespace: the parser folds runs of it, and (like for the email package's own
        # writer) keeps a space where a long name is split into two encoded-words
        assert "".join(to.display_name.split()) == "".join(name.split())
        plain = msg.get_body(preferencelist=("plain",))
        assert plain is not None
        got = plain.get_content().replace("\r\n", "\n")
        assert got.rstrip("\n") == "\n".join(body.splitlines()).rstrip("\n")
        if html:
            rich = msg.get_body(preferencelist=("html",))
            assert rich is not None
