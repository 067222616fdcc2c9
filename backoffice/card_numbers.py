"""Card numbers (PANs) are never stored, logged or echoed: finding them in any text.

A card number here is a run of 13 to 19 digits, possibly grouped by spaces, dashes, dots or
underscores, that passes the Luhn check. Text holding one is refused by the services
(`contains_card_number`); logs get it masked (`mask_card_numbers`, `CardNumberLogFilter`).
"""

import logging
import re

DIGIT_RUN = re.compile(r"(?<!\d)\d(?:[ ._-]?\d){12,18}(?![ ._-]?\d)")
# In URLs the separators may be percent- or plus-encoded (a GET search typed with spaces).
URL_DIGIT_RUN = re.compile(r"(?<!\d)\d(?:(?:[ ._+-]|%20|%2[dD]|%2[eE])?\d){12,18}(?!\d)")
MASK = "[card number removed]"


def _luhn_valid(digits: list[int]) -> bool:
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _is_card_number(run: str) -> bool:
    digits = re.sub(r"%2[0dDeE]", "", run)
    return _luhn_valid([int(char) for char in digits if char.isdigit()])


def contains_card_number(text: str) -> bool:
    """True if the text holds something that passes for a card number."""
    return any(_is_card_number(run.group()) for run in DIGIT_RUN.finditer(text or ""))


def mask_card_numbers(text: str) -> str:
    """The text with every card number (plain or URL-encoded) replaced by a marker."""

    def mask(match: re.Match) -> str:
        return MASK if _is_card_number(match.group()) else match.group()

    return URL_DIGIT_RUN.sub(mask, DIGIT_RUN.sub(mask, text))


class CardNumberLogFilter(logging.Filter):
    """On a handler: the formatted message of every record with card numbers masked (the
    access log line of a GET search holds its query string)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_card_numbers(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True
