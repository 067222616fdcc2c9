"""Input checks shared by the services and the forms: a new payment's fields are checked
before anything is written (card numbers in any stored text are refused by every save,
backoffice.card_numbers; here too, with the payment's own wording)."""

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from backoffice.card_numbers import contains_card_number
from payments.errors import PaymentError
from payments.models import Merchant
from payments.money import validate_currency

TOKEN_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{2,63}$")


def validate_new_payment(
    *,
    merchant: Merchant,
    amount_minor: int,
    currency: str,
    payment_method: str,
    idempotency_key: str,
    merchant_reference: str = "",
    customer_email: str = "",
    description: str = "",
) -> None:
    """Refuse (PaymentError, every problem keyed by its field) what payment_create must not write."""
    errors: dict[str, list[str]] = {}

    def refuse(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    if not merchant.is_active:
        refuse("merchant", f"Merchant {merchant} is not active.")
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        refuse("amount_minor", "The amount must be a whole number of minor units.")
    elif amount_minor <= 0:
        refuse("amount_minor", "The amount must be greater than zero.")
    elif amount_minor > settings.PAYMENTS_MAX_AMOUNT_MINOR:
        refuse("amount_minor", f"The amount is above the maximum of {settings.PAYMENTS_MAX_AMOUNT_MINOR} minor units.")
    try:
        validate_currency(currency)
    except ValidationError as error:
        refuse("currency", error.messages[0])
    if contains_card_number(payment_method):
        refuse("payment_method", "Card numbers are never accepted: send a payment method token.")
    elif not TOKEN_PATTERN.match(payment_method or ""):
        refuse("payment_method", "Enter a payment method token such as tok_success.")
    if not idempotency_key or len(idempotency_key) > 100:
        refuse("idempotency_key", "An idempotency key of 1 to 100 characters is required.")
    if len(merchant_reference) > 100:
        refuse("merchant_reference", "The reference is longer than 100 characters.")
    if len(description) > 255:
        refuse("description", "The description is longer than 255 characters.")
    if customer_email:
        try:
            validate_email(customer_email)
        except ValidationError:
            refuse("customer_email", "Enter a valid e-mail address.")
    for field, value in (
        ("idempotency_key", idempotency_key),
        ("merchant_reference", merchant_reference),
        ("description", description),
        ("customer_email", customer_email),
    ):
        if contains_card_number(value):
            refuse(field, "This looks like a card number; card numbers are never accepted or stored.")
    if errors:
        raise PaymentError(errors)


def require_reason(reason: str, what: str) -> str:
    """The reason, stripped; refused when empty (every staff decision says why)."""
    reason = (reason or "").strip()
    if not reason:
        raise PaymentError({"reason": [f"A reason is required to {what}."]}, code="reason_required")
    return reason


REQUEST_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_:.-]{8,100}$")


def require_request_key(request_key: str) -> str:
    """A money-moving command's request key: generated once per rendered form (or per
    programmatic intent), never typed by a person. The same key again finds the first result."""
    if (
        not isinstance(request_key, str)
        or not REQUEST_KEY_PATTERN.match(request_key)
        or contains_card_number(request_key)
    ):
        raise PaymentError(
            {"request_key": ["This form is out of date: open it again and submit it once more."]},
            code="request_key",
        )
    return request_key
