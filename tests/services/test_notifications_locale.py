"""E-mails (issue #13): the text's language and the number and date formats come from the same locale — never an
English sentence with a German thousands separator. Customers whose language has a translation (de, fr, en)
get it in their own formats; any other locale gets English text in English formats."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from babel.dates import format_datetime
from babel.numbers import format_currency
from conftest_an import processed

from payevents.services.notifications.render import render_confirmation

AT = datetime(2026, 2, 3, 10, 30, 5, tzinfo=UTC)


def _mail(locale: str, value: str = "1234567.89", currency: str = "EUR") -> object:
    event = processed("pay_loc", value, currency, at=AT, invoice_id="INV-9", order_id="ORD-7").event
    return render_confirmation(event, "Anna", locale, "payments@payevents.local")  # type: ignore[arg-type]


def test_a_german_customer_gets_german_text_in_german_formats() -> None:
    mail = _mail("de_DE")
    assert mail.amount == "1.234.567,89\xa0€"  # type: ignore[attr-defined]
    for part in (mail.text, mail.html):  # type: ignore[attr-defined]
        assert "Hallo Anna" in part and "Zahlung" in part and "1.234.567,89\xa0€" in part
        assert "03.02.2026, 10:30:05 UTC" in part
        assert "we have received" not in part and "Paid with" not in part and "Amount" not in part
        assert "Kreditkarte mit Endziffern 4242" in part
    assert mail.subject == "Zahlungsbestätigung: 1.234.567,89\xa0€"  # type: ignore[attr-defined]
    assert '<html lang="de">' in mail.html  # type: ignore[attr-defined]


def test_a_french_customer_gets_french_text_in_french_formats() -> None:
    mail = _mail("fr_FR")
    amount = format_currency(1234567.89, "EUR", locale="fr_FR")
    assert amount.startswith("1\u202f234\u202f567,89")  # narrow no-break spaces, decimal comma
    for part in (mail.text, mail.html):  # type: ignore[attr-defined]
        assert "Bonjour Anna" in part and "paiement" in part and amount in part
        assert "3 févr. 2026, 10:30:05 UTC" in part
        assert "we have received" not in part and "Hallo" not in part
        assert "Carte de crédit se terminant par 4242" in part
    assert '<html lang="fr">' in mail.html  # type: ignore[attr-defined]


@pytest.mark.parametrize("locale", ["es_ES", "nl_NL", "ja_JP"])
def test_a_locale_without_translation_gets_english_text_in_english_formats(locale: str) -> None:
    mail = _mail(locale)
    english = format_currency(1234567.89, "EUR", locale="en")
    assert english == "€1,234,567.89"
    assert mail.amount == english  # type: ignore[attr-defined]
    assert "we have received your payment of €1,234,567.89" in mail.text  # type: ignore[attr-defined]
    assert format_datetime(AT, "medium", tzinfo=UTC, locale="en") + " UTC" in mail.text  # type: ignore[attr-defined]
    assert '<html lang="en">' in mail.html  # type: ignore[attr-defined]


@pytest.mark.parametrize("locale", ["de_AT", "de_CH", "fr_CH", "fr_CA", "en_US", "en_GB", "en_IN"])
def test_a_translated_language_keeps_the_customers_regional_formats(locale: str) -> None:
    mail = _mail(locale, "1234567.89", "CHF")
    regional = format_currency(1234567.89, "CHF", locale=locale)
    assert mail.amount == regional  # type: ignore[attr-defined]
    assert regional in mail.text  # type: ignore[attr-defined]
    lang = locale.split("_")[0]
    assert f'<html lang="{lang}">' in mail.html  # type: ignore[attr-defined]
    assert format_datetime(AT, "medium", tzinfo=UTC, locale=locale) + " UTC" in mail.text  # type: ignore[attr-defined]


def test_an_unknown_locale_gets_english_words_in_english_formats() -> None:
    """A locale babel does not know (a customer row written by another tool) must not make the e-mail
    unrenderable: English words in English formats, as for any locale without a translation."""
    from payevents.services.notifications.render import mail_locale

    assert mail_locale("xx_YY") == ("en", "en")
