"""Money: integer minor units plus an ISO 4217 code. Never floats."""

import functools
import re
from decimal import Decimal

from django.core.exceptions import ValidationError
from iso4217 import Currency

# Offered where a list is filtered by currency and in the portal's new-payment form: a fixed
# list, never a SELECT DISTINCT over the payments (any ISO 4217 code still filters by URL).
COMMON_CURRENCIES = ["EUR", "USD", "GBP", "CHF", "SEK", "PLN", "JPY", "KWD"]
CURRENCY_CODE = re.compile(r"[A-Z]{3}")
AMOUNT_PATTERN = re.compile(r"^-?\d{1,15}(\.\d{1,15})?$")
GROUPED_AMOUNT_PATTERN = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d{1,15})?$")


@functools.cache
def _iso_exponent(code: str) -> int | None:
    # Cached: an export formats millions of amounts in a handful of currencies.
    try:
        return Currency(code).exponent
    except ValueError:
        return None


def currency_exponent(code: str) -> int:
    """Digits after the decimal point for an ISO 4217 currency (JPY 0, EUR 2, KWD 3)."""
    exponent = _iso_exponent(code)
    if exponent is None:  # unknown codes, and funds/metals like XAU with no minor unit
        raise ValidationError(
            "%(code)s is not an ISO 4217 currency code.", code="unknown_currency", params={"code": code}
        )
    return exponent


def validate_currency(code: str) -> None:
    currency_exponent(code)


def parse_major_amount(text: str, currency: str) -> int:
    """'12.34' EUR -> 1234; refuses letters, signs, and more decimals than the currency has."""
    exponent = currency_exponent(currency)
    text = str(text).strip()
    # A comma only between groups of thousands ("1,234.56"): "12,34" meant as a decimal comma
    # must not become 1,234.00.
    if "," in text and not GROUPED_AMOUNT_PATTERN.match(text):
        raise ValidationError(
            "Use a point for decimals, and commas only between thousands, as in 1,234.56.",
            code="invalid_amount",
        )
    cleaned = text.replace(",", "")
    # Plain digits with at most one point: no exponents ("1e999999" would overflow), no signs
    # other than a leading minus (reported as not positive), no NaN or Infinity.
    if not AMOUNT_PATTERN.match(cleaned):
        raise ValidationError("Enter an amount such as 12.34.", code="invalid_amount")
    value = Decimal(cleaned)
    if len(cleaned.partition(".")[2]) > exponent:  # the digits after the point, zeros included
        raise ValidationError(
            "%(currency)s has %(exponent)s decimal places; %(amount)s has more.",
            code="too_many_decimals",
            params={"currency": currency, "exponent": exponent, "amount": cleaned},
        )
    minor = int(value.scaleb(exponent))
    if minor <= 0:
        raise ValidationError("The amount must be greater than zero.", code="amount_not_positive")
    return minor


def format_major(amount_minor: int, currency: str, *, grouped: bool = False) -> str:
    """1234, 'EUR' -> '12.34' (grouped: 123456 -> '1,234.56'): what parse_major_amount reads back."""
    exponent = currency_exponent(currency)
    major = Decimal(amount_minor).scaleb(-exponent)
    return f"{major:{',' if grouped else ''}.{exponent}f}"


def format_minor(amount_minor: int, currency: str) -> str:
    """1234, 'EUR' -> '12.34 EUR'; 1200, 'JPY' -> '1,200 JPY'."""
    try:
        return f"{format_major(amount_minor, currency, grouped=True)} {currency}"
    except ValidationError:
        return f"{amount_minor} {currency} (minor units)"


def major_to_minor(major: str | int | Decimal, currency: str) -> int:
    """A configured amount in major units ('500') to minor units, rounding nothing away."""
    return int(Decimal(str(major)).scaleb(currency_exponent(currency)))
