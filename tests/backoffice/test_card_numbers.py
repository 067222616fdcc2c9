"""Card numbers never reach a log in clear: the request log line of a GET search, app logs."""

import io
import logging

import pytest

from backoffice.card_numbers import contains_card_number, mask_card_numbers

CARD = "4242424242424242"


@pytest.mark.parametrize(
    "text",
    [
        f"GET /admin/payments/payment/?q={CARD} HTTP/1.1",
        "GET /merchant/payments/?q=4242+4242+4242+4242 HTTP/1.1",
        "GET /merchant/payments/?q=4242%204242%204242%204242&status=failed HTTP/1.1",
        "GET /admin/payments/payment/?q=4242-4242-4242-4242 HTTP/1.1",
        "refund for 5555 5555 5555 4444 asked",
    ],
)
def test_card_numbers_in_any_spelling_are_masked(text):
    masked = mask_card_numbers(text)
    assert masked != text and "[card number removed]" in masked
    assert "4242" not in masked.replace("4242 4242", "") or "4444" not in masked


def test_other_numbers_are_left_alone():
    text = "GET /merchant/payments/?q=1234567890123&page=2 HTTP/1.1 order 2026120100001"
    assert mask_card_numbers(text) == text
    assert not contains_card_number("order 1234567890123") and contains_card_number(f"card {CARD}")


def captured(logger_name: str, message: str, *args) -> str:
    logger = logging.getLogger(logger_name)
    # The handlers LOGGING configured (pytest adds its own to the root; those are not ours).
    handlers = [h for h in logger.handlers or logging.getLogger().handlers if type(h) is logging.StreamHandler]
    assert handlers
    stream = io.StringIO()
    previous = [handler.setStream(stream) for handler in handlers]
    try:
        logger.warning(message, *args)
    finally:
        for handler, old in zip(handlers, previous, strict=True):
            handler.setStream(old)
    return stream.getvalue()


def test_the_request_log_line_of_a_get_search_holds_no_card_number():
    line = captured("django.server", '"%s" %s %s', f"GET /admin/payments/payment/?q={CARD} HTTP/1.1", 200, 1234)

    assert "/admin/payments/payment/?q=" in line and CARD not in line


def test_app_logs_hold_no_card_number():
    line = captured("payments.portal", "search for %s gave nothing", "4242 4242 4242 4242")

    assert "search for" in line and "4242 4242 4242 4242" not in line
