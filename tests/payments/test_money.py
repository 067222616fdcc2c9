import pytest
from django.core.exceptions import ValidationError
from hypothesis import given
from hypothesis import strategies as st

from payments.money import currency_exponent, format_major, format_minor, parse_major_amount


@pytest.mark.parametrize(("code", "exponent"), [("EUR", 2), ("JPY", 0), ("KWD", 3), ("USD", 2)])
def test_currency_exponent_comes_from_iso_4217(code, exponent):
    assert currency_exponent(code) == exponent


@pytest.mark.parametrize("code", ["ZZZ", "eur", "", "XAU", "EURO"])
def test_unknown_or_unitless_currency_is_refused(code):
    with pytest.raises(ValidationError):
        currency_exponent(code)


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("12.34", "EUR", 1234),
        ("12", "EUR", 1200),
        ("1200", "JPY", 1200),
        ("1.234", "KWD", 1234),
        ("0.01", "EUR", 1),
        ("1,000.50", "EUR", 100050),
    ],
)
def test_major_amounts_parse_exactly_per_currency(text, currency, minor):
    assert parse_major_amount(text, currency) == minor


@pytest.mark.parametrize(
    ("text", "currency", "code"),
    [
        ("12.345", "EUR", "too_many_decimals"),
        ("1.5", "JPY", "too_many_decimals"),
        ("0", "EUR", "amount_not_positive"),
        ("-5", "EUR", "amount_not_positive"),
        ("12a", "EUR", "invalid_amount"),
        ("NaN", "EUR", "invalid_amount"),
        ("", "EUR", "invalid_amount"),
        ("Infinity", "EUR", "invalid_amount"),
        ("1e999999", "EUR", "invalid_amount"),
        ("1e2", "EUR", "invalid_amount"),
        ("+5", "EUR", "invalid_amount"),
        ("12,34", "EUR", "invalid_amount"),
        ("1,2,3", "EUR", "invalid_amount"),
        ("1,23.45", "EUR", "invalid_amount"),
        ("1_000", "EUR", "invalid_amount"),
        ("1" * 16, "EUR", "invalid_amount"),
    ],
)
def test_bad_major_amounts_are_refused_with_a_reason(text, currency, code):
    with pytest.raises(ValidationError) as error:
        parse_major_amount(text, currency)
    assert error.value.code == code


@pytest.mark.parametrize(
    ("minor", "currency", "shown"),
    [(1234, "EUR", "12.34 EUR"), (120000, "JPY", "120,000 JPY"), (1234, "KWD", "1.234 KWD"), (5, "EUR", "0.05 EUR")],
)
def test_amounts_display_in_major_units(minor, currency, shown):
    assert format_minor(minor, currency) == shown


def test_commas_are_accepted_only_between_thousands():
    assert parse_major_amount("1,234,567", "JPY") == 1_234_567
    with pytest.raises(ValidationError, match="Use a point for decimals"):
        parse_major_amount("12,34", "EUR")  # a decimal comma must never become 1,234.00


CURRENCIES = st.sampled_from(["EUR", "JPY", "KWD", "USD", "CLF", "BHD"])


@given(amount_minor=st.integers(1, 10**15 - 1), currency=CURRENCIES, grouped=st.booleans())
def test_formatting_then_parsing_gives_back_the_amount(amount_minor, currency, grouped):
    text = format_major(amount_minor, currency, grouped=grouped)
    assert parse_major_amount(text, currency) == amount_minor
    assert format_minor(amount_minor, currency) == f"{format_major(amount_minor, currency, grouped=True)} {currency}"


@given(whole=st.integers(1, 10**9), fraction=st.integers(0, 9999), currency=CURRENCIES, grouped=st.booleans())
def test_parsing_then_formatting_gives_back_the_text(whole, fraction, currency, grouped):
    exponent = currency_exponent(currency)
    digits = str(fraction).zfill(4)[:exponent]
    text = f"{whole:{',' if grouped else ''}}" + (f".{digits}" if exponent else "")
    assert format_major(parse_major_amount(text, currency), currency, grouped=grouped) == text
