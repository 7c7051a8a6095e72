"""The payment confirmation e-mail, rendered from the Jinja2 templates shipped in this package.

The words are English, German or French (:data:`TEXTS`), the amount and date formatted (babel) in the
locale of the language actually used: the customer's own locale when their language has a translation,
English formats with the English words otherwise (see :func:`mail_locale`). The payment method is shown as
its type and last four digits only. :func:`message_bytes` writes the MIME message directly
(the ``email`` package's header machinery was most of the delivery worker's time); :func:`build_message`
is the reference it is tested against.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import re
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

from babel import Locale
from babel.core import UnknownLocaleError
from babel.dates import format_date, format_time, get_datetime_format
from babel.numbers import (
    format_currency,
    get_currency_precision,
    get_currency_symbol,
    get_decimal_symbol,
    get_group_symbol,
)
from markupsafe import Markup, escape
from msgspec import UNSET

from payevents.contracts.events import PaymentProcessed

if TYPE_CHECKING:  # Jinja renders the reference only: the precompiled templates do not import it (~15 ms a start)
    from jinja2 import Environment, Template

#: uuid5 namespace of the notification Message-IDs (a replayed event derives the same id)
MESSAGE_ID_NAMESPACE = uuid.UUID("5d1c0b8e-7c1e-5a7e-9a51-5f0e3b7c2a10")
TEMPLATE = "payment_confirmation"


@functools.cache
def _env() -> Environment:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    return Environment(
        loader=PackageLoader("payevents.services.notifications", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


@functools.cache
def _templates() -> tuple[Template, Template]:
    """The text and HTML templates as Jinja compiles them: the reference :func:`render_with_jinja` renders with."""
    env = _env()
    return env.get_template(f"{TEMPLATE}.txt.j2"), env.get_template(f"{TEMPLATE}.html.j2")


# -- precompiled templates ------------------------------------------------------------------------------
# Jinja spends ~80 % of a confirmation's rendering on its per-render machinery (a new context, attribute
# lookups through the environment, an escape call per value), not on the text. The two templates use a small
# subset of the language — ``{{ name }}``, ``{{ name.key }}``, ``{{ name[0] }}``, ``{% if name %}…{% endif %}``
# — so they are compiled once, from the same ``.j2`` files, into a flat list of steps. A template that uses
# anything else is a TemplateError at the first render (no silent difference); the output is Jinja's byte for
# byte (tests/services/test_notifications_render.py renders both ways).

_TAG = re.compile(r"\{\{(.*?)\}\}|\{%(.*?)%\}|\{#")
_EXPR = re.compile(r"^\s*([A-Za-z_]\w*)(?:\.([A-Za-z_]\w*)|\[(\d+)\])?\s*$")
_IF = re.compile(r"^\s*if\s+([A-Za-z_]\w*)\s*$")
_ENDIF = re.compile(r"^\s*endif\s*$")

#: a step: a literal text, a value (``(name, key)`` with key a str, an int or None), a jump over an if's body
#: when ``name`` is falsy (``(name, index of the step after its endif)``)
_Step = tuple[int, object, object]
_TEXT, _VALUE, _IF_NOT = 0, 1, 2


def _template_error(message: str) -> Exception:
    from jinja2 import TemplateError

    return TemplateError(message)


def _template_source(name: str) -> str:
    """A ``.j2`` file of the package, as Jinja's loader reads it."""
    return resources.files("payevents.services.notifications").joinpath("templates", name).read_text("utf-8")


def compile_template(source: str) -> tuple[_Step, ...]:
    """The steps of ``source`` (the subset of Jinja described above); anything else is a TemplateError."""
    steps: list[list[object]] = []
    open_ifs: list[int] = []
    pos = 0
    for m in _TAG.finditer(source):
        if m.start() > pos:
            steps.append([_TEXT, source[pos:m.start()], None])
        pos = m.end()
        if m.group(1) is not None:
            expr = _EXPR.match(m.group(1))
            if expr is None or m.group(1).startswith(("-", "+")) or m.group(1).endswith(("-", "+")):
                raise _template_error(f"precompiled templates take {{{{ name[.key|[n]] }}}}, not {m.group(0)!r}")
            name, attr, index = expr.groups()
            steps.append([_VALUE, name, attr if attr is not None else int(index) if index is not None else None])
        elif m.group(2) is not None and (cond := _IF.match(m.group(2))) is not None:
            open_ifs.append(len(steps))
            steps.append([_IF_NOT, cond.group(1), None])
        elif m.group(2) is not None and _ENDIF.match(m.group(2)) and open_ifs:
            steps[open_ifs.pop()][2] = len(steps)
        else:
            raise _template_error(f"precompiled templates take {{% if name %}} and {{% endif %}}, not {m.group(0)!r}")
    if open_ifs:
        raise _template_error("precompiled templates: an {% if %} without its {% endif %}")
    if pos < len(source):
        steps.append([_TEXT, source[pos:], None])
    return tuple((int(k), a, b) for k, a, b in steps)  # type: ignore[call-overload]


def render_steps(steps: tuple[_Step, ...], context: dict[str, object], autoescape: bool) -> str:
    """``steps`` rendered with ``context`` as Jinja renders their template (``autoescape``: HTML-escape each
    value that is not already Markup)."""
    out: list[str] = []
    i, n = 0, len(steps)
    while i < n:
        kind, a, b = steps[i]
        if kind == _TEXT:
            out.append(a)  # type: ignore[arg-type]
        elif kind == _VALUE:
            value = context[a]  # type: ignore[index]
            if b.__class__ is str:  # ``name.key``: Jinja's rule, the attribute first, else the item
                try:
                    value = getattr(value, b)  # type: ignore[arg-type]
                except AttributeError:
                    value = value[b]  # type: ignore[index]
            elif b is not None:
                value = value[b]  # type: ignore[index]
            out.append(escape(value) if autoescape else str(value))
        elif not context[a]:  # type: ignore[index]
            i = b  # type: ignore[assignment]
            continue
        i += 1
    return "".join(out)


def _html_escape(value: object) -> str:
    """markupsafe's ``escape`` (what Jinja's autoescape calls) without a Markup object per plain string."""
    cls = value.__class__
    if cls is Markup:  # already escaped (the headings): as it is
        return value  # type: ignore[return-value]
    if cls is str:
        return value.replace("&", "&amp;").replace(">", "&gt;").replace("<", "&lt;").replace(  # type: ignore[attr-defined]
            "'", "&#39;").replace('"', "&#34;")
    return str(escape(value))


def _jinja_attr(value: Any, key: str) -> Any:
    """Jinja's ``value.key``: the attribute, else the item."""
    try:
        return getattr(value, key)
    except AttributeError:
        return value[key]


def to_function(steps: tuple[_Step, ...], autoescape: bool) -> Callable[[dict[str, Any]], str]:
    """``steps`` as one Python function of the context (what :func:`render_steps` does, without interpreting
    the steps on every render). Names are identifiers and literals ``repr``: the template cannot inject code."""
    lines = ["def render(c):", " out = []", " a = out.append"]
    conv = "_esc" if autoescape else "str"
    ends: dict[int, int] = {}
    indent = " "
    for i, (kind, a, b) in enumerate(steps):
        indent = " " * (1 + sum(1 for end in ends.values() if end > i))
        if kind == _TEXT:
            lines.append(f"{indent}a({a!r})")
        elif kind == _VALUE:
            value = f"c[{a!r}]"
            if isinstance(b, str):  # a dict without an attribute of that name: the item, as Jinja finds it
                value = (f"({value}[{b!r}] if {value}.__class__ is dict else _attr({value}, {b!r}))"
                         if not hasattr(dict, b) else f"_attr({value}, {b!r})")
            elif b is not None:
                value = f"{value}[{b!r}]"
            lines.append(f"{indent}a({conv}({value}))")
        else:
            lines.append(f"{indent}if c[{a!r}]:")
            lines.append(f"{indent} pass")
            ends[i] = int(b)  # type: ignore[call-overload]
    lines.append(" return ''.join(out)")
    namespace: dict[str, Any] = {"_esc": _html_escape, "_attr": _jinja_attr}
    exec(compile("\n".join(lines), "<payevents template>", "exec"), namespace)
    return namespace["render"]  # type: ignore[no-any-return]


@functools.cache
def _compiled() -> tuple[Callable[[dict[str, Any]], str], Callable[[dict[str, Any]], str]]:
    """The text and HTML templates as functions, compiled once from the package's ``.j2`` files."""
    text, html = (compile_template(_template_source(f"{TEMPLATE}.{ext}.j2")) for ext in ("txt", "html"))
    return to_function(text, False), to_function(html, True)


@functools.lru_cache(maxsize=256)
def _locale(identifier: str) -> Locale:
    return Locale.parse(identifier)


_NAMESPACE_BYTES: Final = MESSAGE_ID_NAMESPACE.bytes


def _message_name(event_id: str) -> str:
    """The name whose uuid5 (in :data:`MESSAGE_ID_NAMESPACE`) identifies the confirmation for ``event_id``."""
    return f"payevents.notification:{event_id}"


@functools.lru_cache(maxsize=1024)  # the worker derives it for the Message-ID, the file name and the boundary
def message_key(event_id: str) -> str:
    """``str(message_uuid(event_id))``, computed as ``uuid.uuid5`` computes it (SHA-1 of the namespace and the
    name, version 5, RFC 4122 variant) without building a ``UUID`` on the way (a third of its time)."""
    name = _message_name(event_id).encode()
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def message_uuid(event_id: str) -> uuid.UUID:
    """The uuid5 of the confirmation for ``event_id`` (its Message-ID, Maildir file name and MIME boundary are
    :func:`message_key`'s): ``uuid.uuid5`` itself, the reference :func:`build_message` builds with."""
    return uuid.uuid5(MESSAGE_ID_NAMESPACE, _message_name(event_id))


@functools.lru_cache(maxsize=1024)  # the worker asks twice per e-mail: for its mark and for the header
def message_id_for(event_id: str, mail_from: str) -> str:
    """The deterministic Message-ID of the confirmation for ``event_id``."""
    domain = mail_from.rsplit("@", 1)[-1].strip(" >") or "payevents.local"
    return f"<{message_key(event_id)}@{domain}>"


def format_amount(value: object, currency: str, locale: str) -> str:
    """``format_currency`` keeping every decimal the currency has (no float, no rounding)."""
    return _format_amount(str(value), currency, locale)


@functools.lru_cache(maxsize=4096)  # prices repeat; keyed by the exact decimal string
def _format_amount(value: str, currency: str, locale: str) -> str:
    shape = _amount_shape(currency, locale)
    amount = Decimal(value)
    if shape is None or not amount.is_finite():
        return format_currency(amount, currency, locale=_locale(locale), currency_digits=True)
    number = shape.number(abs(amount))
    if "'" in number:  # babel would strip quotes over the whole string: let it
        return format_currency(amount, currency, locale=_locale(locale), currency_digits=True)
    negative = int(amount.is_signed())
    return shape.prefixes[negative] + number + shape.suffixes[negative]


@dataclasses.dataclass(frozen=True, slots=True)
class _AmountShape:
    """A locale's standard currency pattern for one currency, resolved once: what babel's
    ``NumberPattern.apply`` looks up again for every value (the symbols, the quantum, the affixes)."""

    quantum: Decimal  # 10 ** -digits: the currency's minor unit
    digits: int
    min_int: int
    grouping: tuple[int, int]  # the first group from the right, then every other
    group: str
    decimal: str
    prefixes: tuple[str, str]  # positive, negative: with the currency symbol in
    suffixes: tuple[str, str]

    def number(self, value: Decimal) -> str:
        """``NumberPattern._quantize_value(value.normalize(), …)`` of a finite, non-negative value with the
        currency's digits (``frac_prec`` of ``(digits, digits)``): rounded half-even to the minor unit, the
        integer part grouped, the fraction always all its digits."""
        whole, _, fraction = f"{value.normalize().quantize(self.quantum):f}".partition(".")
        if len(whole) < self.min_int:
            whole = "0" * (self.min_int - len(whole)) + whole
        size = self.grouping[0]
        if len(whole) > size:
            groups = []
            while len(whole) > size:
                groups.append(whole[-size:])
                whole = whole[:-size]
                size = self.grouping[1]
            groups.append(whole)
            whole = self.group.join(reversed(groups))
        return whole + self.decimal + fraction if self.digits else whole


@functools.lru_cache(maxsize=1024)
def _amount_shape(currency: str, locale: str) -> _AmountShape | None:
    """What ``format_currency(value, currency, locale=locale, currency_digits=True)`` does not recompute per
    value: the locale's standard currency pattern and symbols, the currency's digits, and the prefix and suffix
    with the currency symbol already in (``NumberPattern.apply`` looks up the currency's name and symbol on every
    call). None when the pattern is one this shortcut does not reproduce exactly (then babel formats each value)."""
    loc = _locale(locale)
    pattern = loc.currency_formats["standard"]
    affixes = "".join((*pattern.prefix, *pattern.suffix))
    if pattern.exp_prec or "@" in pattern.pattern or pattern.scale or not pattern.number_pattern \
            or "¤¤¤" in affixes or "'" in affixes:
        return None
    symbol = get_currency_symbol(currency, loc)

    def fill(affix: str) -> str:
        return affix.replace("¤¤", currency.upper()).replace("¤", symbol)

    digits = get_currency_precision(currency)
    return _AmountShape(
        quantum=Decimal(10) ** -digits, digits=digits, min_int=pattern.int_prec[0],
        grouping=(pattern.grouping[0], pattern.grouping[1]),
        group=get_group_symbol(loc, numbering_system="latn"), decimal=get_decimal_symbol(loc, numbering_system="latn"),
        prefixes=(fill(pattern.prefix[0]), fill(pattern.prefix[1])),
        suffixes=(fill(pattern.suffix[0]), fill(pattern.suffix[1])))


def format_processed_at(at: datetime, locale: str) -> str:
    """``babel.dates.format_datetime(at, "medium", tzinfo=UTC, locale=locale)`` (``at`` in UTC), built as babel
    builds it from the locale's medium date and time, with the date cached per day and the time per second."""
    at = at.astimezone(UTC)
    joiner, fractions = _datetime_shape(locale)
    time = format_time(at, "medium", tzinfo=None, locale=_locale(locale)) if fractions \
        else _time_part(at.replace(microsecond=0), locale)
    return joiner.replace("{0}", time).replace("{1}", _date_part(at.date(), locale))


@functools.lru_cache(maxsize=256)
def _datetime_shape(locale: str) -> tuple[str, bool]:
    """The locale's medium date-time joiner, and whether its medium time shows fractions of a second."""
    loc = _locale(locale)
    return str(get_datetime_format("medium", locale=loc)).replace("'", ""), "S" in loc.time_formats["medium"].pattern


@functools.lru_cache(maxsize=1024)
def _date_part(day: date, locale: str) -> str:
    return format_date(day, "medium", locale=_locale(locale))


@functools.lru_cache(maxsize=4096)
def _time_part(at: datetime, locale: str) -> str:
    return format_time(at, "medium", tzinfo=None, locale=_locale(locale))


#: The e-mail's words per language. A customer whose language is here reads it in their own locale's formats
#: (de_CH: German words, Swiss numbers); any other locale gets English words in English formats (``en``), so
#: the language of the sentences and the formats of the numbers and dates in them always agree.
TEXTS: Final[dict[str, dict[str, str]]] = {
    "en": {
        "subject": "Payment confirmation: {amount}", "hello": "Hello {name},",
        "received": "we have received your payment of {amount}. Thank you!", "amount": "Amount:",
        "method": "Paid with:", "date": "Date:", "payment": "Payment:", "order": "Order:", "invoice": "Invoice:",
        "description": "Description:", "keep": "Please keep this e-mail for your records.",
        "ending": "{method} ending in {last4}", "card": "Card",
    },
    "de": {
        "subject": "Zahlungsbestätigung: {amount}", "hello": "Hallo {name},",
        "received": "wir haben Ihre Zahlung über {amount} erhalten. Vielen Dank!", "amount": "Betrag:",
        "method": "Bezahlt mit:", "date": "Datum:", "payment": "Zahlung:", "order": "Bestellung:",
        "invoice": "Rechnung:", "description": "Beschreibung:",
        "keep": "Bitte bewahren Sie diese E-Mail für Ihre Unterlagen auf.",
        "ending": "{method} mit Endziffern {last4}", "card": "Karte",
    },
    "fr": {
        "subject": "Confirmation de paiement : {amount}", "hello": "Bonjour {name},",
        "received": "nous avons bien reçu votre paiement de {amount}. Merci !", "amount": "Montant :",
        "method": "Payé avec :", "date": "Date :", "payment": "Paiement :", "order": "Commande :",
        "invoice": "Facture :", "description": "Description :",
        "keep": "Veuillez conserver cet e-mail pour vos archives.",
        "ending": "{method} se terminant par {last4}", "card": "Carte",
    },
}
#: payment method types with a name per language (others are shown as written, capitalized)
METHODS: Final[dict[str, dict[str, str]]] = {
    "de": {"credit_card": "Kreditkarte", "debit_card": "Debitkarte", "card": "Karte",
           "bank_transfer": "Banküberweisung", "sepa_debit": "SEPA-Lastschrift", "paypal": "PayPal"},
    "fr": {"credit_card": "Carte de crédit", "debit_card": "Carte de débit", "card": "Carte",
           "bank_transfer": "Virement bancaire", "sepa_debit": "Prélèvement SEPA", "paypal": "PayPal"},
}
FALLBACK_LANGUAGE: Final = "en"


@functools.lru_cache(maxsize=256)
def mail_locale(identifier: str) -> tuple[str, str]:
    """(language of the words, locale of the formats) for a customer's locale: their own locale when their
    language has a translation, else English words in English formats."""
    try:
        loc = _locale(identifier or "en_US")
    except (ValueError, TypeError, LookupError, UnknownLocaleError):
        return FALLBACK_LANGUAGE, FALLBACK_LANGUAGE
    if loc.language in TEXTS:
        return loc.language, str(loc)
    return FALLBACK_LANGUAGE, FALLBACK_LANGUAGE


def method_label(method_type: str, last4: str, language: str = FALLBACK_LANGUAGE) -> str:
    """E.g. ``credit_card`` + ``4242`` -> ``Credit card ending in 4242`` (never more than last4), in ``language``."""
    texts = TEXTS.get(language, TEXTS[FALLBACK_LANGUAGE])
    key = method_type.strip().lower().replace("-", "_").replace(" ", "_")
    label = METHODS.get(language, {}).get(key)
    if label is None:
        label = method_type.replace("_", " ").replace("-", " ").strip().lower().capitalize() or texts["card"]
    return texts["ending"].format(method=label, last4=last4)


@functools.cache
def _labels(language: str) -> dict[str, str]:
    """The text e-mail's labels of ``language``, padded to their column once (``"%-17s"|format(t.x)``)."""
    return {k: f"{v:<17}" for k, v in TEXTS[language].items()}


@functools.cache
def _heads(language: str) -> dict[str, Markup]:
    """The HTML e-mail's table headings of ``language``, trimmed and escaped once (``t.x.rstrip(" :")``)."""
    return {k: escape(v.rstrip(" :")) for k, v in TEXTS[language].items()}


@dataclasses.dataclass(frozen=True, slots=True)
class RenderedMail:
    subject: str
    text: str
    html: str
    amount: str


def render_confirmation(event: PaymentProcessed, name: str, locale: str, sender: str) -> RenderedMail:
    """Subject, text and HTML bodies of the confirmation of ``event`` for a customer (the precompiled templates)."""
    context = _context(event, name, locale, sender)
    text, html = _compiled()
    return RenderedMail(subject=context["subject"], text=text(context), html=html(context),  # type: ignore[arg-type]
                        amount=context["amount"])  # type: ignore[arg-type]


def render_with_jinja(event: PaymentProcessed, name: str, locale: str, sender: str) -> RenderedMail:
    """:func:`render_confirmation` rendered by Jinja itself: the reference the precompiled templates are tested
    against."""
    context = _context(event, name, locale, sender)
    text_template, html_template = _templates()
    return RenderedMail(subject=context["subject"], text=text_template.render(context),  # type: ignore[arg-type]
                        html=html_template.render(context), amount=context["amount"])  # type: ignore[arg-type]


def _context(event: PaymentProcessed, name: str, locale: str, sender: str) -> dict[str, object]:
    """The templates' variables for the confirmation of ``event`` to a customer."""
    data = event.data
    language, formats = mail_locale(locale)  # words and formats from one locale
    texts = TEXTS[language]
    amount = format_amount(data.amount.value, data.amount.currency, formats)
    meta = data.metadata if data.metadata is not UNSET else None
    subject = texts["subject"].format(amount=amount)
    context: dict[str, object] = {
        "subject": subject,
        "lang": language,
        "t": texts,
        "label": _labels(language),
        "head": _heads(language),
        "hello": texts["hello"].format(name=name),
        "received": texts["received"].format(amount=amount),
        # the HTML sets the amount in bold: the sentence's words around it
        "received_parts": texts["received"].split("{amount}", 1),
        "customer_name": name,
        "amount": amount,
        "method": method_label(data.paymentMethod.type, data.paymentMethod.last4, language),
        "processed_at": format_processed_at(data.processedAt, formats) + " UTC",
        "payment_id": data.paymentId,
        "order_id": meta.orderId if meta is not None and meta.orderId is not UNSET else None,
        "invoice_id": data.invoiceId if data.invoiceId is not UNSET else None,
        "description": meta.description if meta is not None and meta.description is not UNSET else None,
        "sender": sender,
    }
    return context


def build_message(
    *, event_id: str, payment_id: str, mail_from: str, recipient: str, recipient_name: str | None, subject: str,
    text: str, html: str | None, created_at: str,
) -> EmailMessage:
    """The MIME message; the same stored intent always builds the same headers (Message-ID, Date)."""
    msg = EmailMessage()
    msg["From"] = mail_from
    msg["To"] = formataddr((recipient_name or "", recipient))
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.fromisoformat(created_at).astimezone(UTC))
    msg["Message-ID"] = message_id_for(event_id, mail_from)
    msg["X-Payevents-Event-Id"] = event_id
    msg["X-Payevents-Payment-Id"] = payment_id
    msg.set_content(text)
    if html:
        msg.add_alternative(html, subtype="html")
        msg.set_boundary(f"=_payevents_{message_uuid(event_id).hex}")  # a re-send is byte-identical
    return msg


def _lines(content: str) -> bytes:
    """``content`` in UTF-8 with ``\n`` line ends, ending in one: ``b"\n".join(lines) + b"\n"`` of its lines
    (``\r\n`` and ``\r`` end a line too); split and joined only when it has a ``\r``, as rendered bodies have
    not."""
    data = content.encode("utf-8")
    if b"\r" in data:
        return b"\n".join(data.splitlines()) + b"\n"
    return data if data.endswith(b"\n") else data + b"\n"


def _body(content: str) -> tuple[str, bytes]:
    """Content-Transfer-Encoding and encoded body (``\n`` line ends, ending in one): 7bit when it is ASCII
    with lines of at most 78 characters (as the ``email`` package chooses), else quoted-printable."""
    data = _lines(content)
    if data.isascii() and max(map(len, data.split(b"\n")), default=0) <= 78:
        return "7bit", data
    return "quoted-printable", binascii.b2a_qp(data, istext=True)


def _part(content: str, subtype: str) -> bytes:
    cte, body = _body(content)
    return (f'Content-Type: text/{subtype}; charset="utf-8"\nContent-Transfer-Encoding: {cte}\n\n').encode() + body


_DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def mail_date(iso: str) -> str:
    """The ``Date`` header of an instant given in ISO 8601 with its offset, in UTC: what
    ``email.utils.format_datetime`` writes for it (RFC 5322, English names, ``+0000``), in a third of its time."""
    at = datetime.fromisoformat(iso).astimezone(UTC)
    return (f"{_DAYS[at.weekday()]}, {at.day:02d} {_MONTHS[at.month - 1]} {at.year:04d}"
            f" {at.hour:02d}:{at.minute:02d}:{at.second:02d} +0000")


@functools.lru_cache(maxsize=4096)  # a customer's confirmations share it
def _to_header(name: str, recipient: str) -> str:
    """``formataddr((name, recipient))`` of an ASCII name (quoted where it must be)."""
    return formataddr((name, recipient))


def encoded_words(value: str) -> str:
    """``value`` as RFC 2047 encoded-words (UTF-8, base64), each at most 75 characters, folded onto
    continuation lines; ASCII is returned as it is."""
    if value.isascii():
        return value
    raw = value.encode()
    if len(raw) <= 45:  # 45 bytes -> 60 base64 characters -> a 72-character word
        return f"=?utf-8?b?{base64.b64encode(raw).decode()}?="
    words: list[bytes] = []
    chunk = b""
    for ch in value:  # split between characters, never inside one
        b = ch.encode()
        if len(chunk) + len(b) > 45:
            words.append(chunk)
            chunk = b""
        chunk += b
    words.append(chunk)
    return "\n ".join(f"=?utf-8?b?{base64.b64encode(w).decode()}?=" for w in words)


def message_bytes(
    *, event_id: str, payment_id: str, mail_from: str, recipient: str, recipient_name: str | None, subject: str,
    text: str, html: str | None, created_at: str,
) -> bytes:
    """The message of :func:`build_message` as bytes (``\\n`` line ends) without the ``email`` package: the
    same headers and bodies once parsed, deterministic (a re-send is byte-identical). Line breaks in header
    values become spaces; a non-ASCII address or a line break in an address is a ValueError."""
    for what, value in (("recipient", recipient), ("mail_from", mail_from)):
        if not value.isascii() or "\n" in value or "\r" in value:
            raise ValueError(f"{what}: {value!r} cannot be sent (non-ASCII address or a line break)")
    name, subject, payment_id = (" ".join(v.splitlines()) for v in (recipient_name or "", subject, payment_id))
    to = _to_header(name, recipient) if name.isascii() else f"{encoded_words(name)} <{recipient}>"
    head = (
        f"From: {mail_from}\n"
        f"To: {to}\n"
        f"Subject: {encoded_words(subject)}\n"
        f"Date: {mail_date(created_at)}\n"
        f"Message-ID: {message_id_for(event_id, mail_from)}\n"
        f"X-Payevents-Event-Id: {event_id}\n"
        f"X-Payevents-Payment-Id: {payment_id}\n"
        "MIME-Version: 1.0\n"
    ).encode()
    if not html:
        return head + _part(text, "plain")
    boundary = f"=_payevents_{message_key(event_id).replace('-', '')}".encode()
    return b"".join((
        head, b'Content-Type: multipart/alternative;\n boundary="', boundary, b'"\n\n',
        b"--", boundary, b"\n", _part(text, "plain"),
        b"\n--", boundary, b"\n", _part(html, "html"),
        b"\n--", boundary, b"--\n",
    ))
