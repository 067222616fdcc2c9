"""Forms of the merchant portal. They parse and validate; the views hand `cleaned_data` to
payments.services and put a service's refusal back on the form (backoffice.forms.ServiceForm).
No form saves a payment model."""

import secrets
from datetime import date, datetime, time, timedelta
from typing import cast

from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm, PasswordResetForm
from django.core import signing
from django.core.exceptions import ValidationError
from django.http import QueryDict
from django.utils import timezone

from backoffice.forms import ServiceForm
from payments.forms import PaymentForm
from payments.gateways.simulated import TOKENS
from payments.models import Merchant, Payment, new_request_key
from payments.money import COMMON_CURRENCIES, CURRENCY_CODE, format_major, format_minor, parse_major_amount
from payments.portal.access import has_portal_access
from payments.search import payment_search
from payments.states import PaymentStatus

# Offered in the new-payment form; any ISO 4217 code works through the services.
PORTAL_CURRENCIES = COMMON_CURRENCIES
TEST_TOKEN_LABELS = {
    "tok_success": "tok_success: approved",
    "tok_decline": "tok_decline: declined",
    "tok_timeout": "tok_timeout: times out, then found approved",
    "tok_error": "tok_error: gateway error, then found never charged",
}
# --- logging in -----------------------------------------------------------------------------


class MerchantLoginForm(AuthenticationForm):
    """Django's log-in form, for merchant accounts only (django-axes counts its failures)."""

    error_messages = {
        **AuthenticationForm.error_messages,
        # The same words for a wrong password and for an account with no merchant: the form must
        # not tell a guesser that a staff password was right (Django's admin log-in does the same).
        "invalid_login": "Please enter a correct username and password for a merchant account. "
        "Note that both fields may be case-sensitive.",
    }

    def confirm_login_allowed(self, user):
        super().confirm_login_allowed(user)
        if not has_portal_access(user):
            raise self.get_invalid_login_error()


class MerchantPasswordResetForm(PasswordResetForm):
    """Reset e-mails go only to accounts that can use the portal, never to staff-only accounts."""

    def get_users(self, email):
        return (user for user in super().get_users(email) if has_portal_access(user))


# --- payments -------------------------------------------------------------------------------


def _data_with(form: forms.Form, name: str, value: str) -> QueryDict:
    """A copy of a bound form's submitted data (an immutable QueryDict) with one value replaced."""
    data = cast(QueryDict, form.data).copy()
    data[name] = value
    return data


def new_portal_idempotency_key() -> str:
    return "portal_" + secrets.token_urlsafe(24)


class PortalPaymentForm(PaymentForm):
    """A new payment of the merchant the user works for (never a form value): a currency
    list, the simulated gateway's test tokens, and a maximum shown in the currency."""

    currency = forms.ChoiceField(choices=[(code, code) for code in PORTAL_CURRENCIES])
    payment_method = forms.ChoiceField(
        label="Test token", choices=[(token, TEST_TOKEN_LABELS.get(token, token)) for token in TOKENS]
    )
    customer_email = forms.EmailField(label="Customer e-mail", required=False, max_length=254)
    merchant_reference = forms.CharField(
        label="Reference", max_length=100, required=False, help_text="Your order number, up to 100 characters."
    )

    field_order = [
        "amount",
        "currency",
        "payment_method",
        "customer_email",
        "merchant_reference",
        "description",
        "idempotency_key",
    ]

    def __init__(self, *args, merchant, **kwargs):
        super().__init__(*args, **kwargs)
        self.merchant = merchant
        if not self.is_bound:
            self.initial.setdefault("idempotency_key", new_portal_idempotency_key())

    def payment_merchant(self) -> Merchant:
        return self.merchant

    def clean(self):
        cleaned_data = super().clean()
        amount_minor = cleaned_data.get("amount_minor")
        if amount_minor is not None and amount_minor > settings.PAYMENTS_MAX_AMOUNT_MINOR:
            maximum = format_minor(settings.PAYMENTS_MAX_AMOUNT_MINOR, cleaned_data["currency"])
            self.add_error("amount", f"The amount is above the maximum of {maximum}.")
        return cleaned_data

    def add_service_error(self, error: ValidationError) -> None:
        if hasattr(error, "error_dict") and "idempotency_key" in error.error_dict:
            # The form was submitted before with other values (back, edit, submit): say so, and
            # give it a fresh key so that submitting again is a deliberate new payment.
            self.add_error(
                None,
                "This form was already used to create a payment with different details. "
                "Check the details and submit again to create another payment.",
            )
            self.data = _data_with(self, "idempotency_key", new_portal_idempotency_key())
            error = ValidationError({k: v for k, v in error.error_dict.items() if k != "idempotency_key"})
            if not error.error_dict:
                return
        super().add_service_error(error)


class PaymentFilterForm(forms.Form):
    """The payments list's filters, read from the query string. Invalid fields are ignored
    (and shown with their error); the valid ones apply, to the list and its CSV alike."""

    q = forms.CharField(
        label="Search",
        required=False,
        max_length=100,
        widget=forms.TextInput(attrs={"placeholder": "Payment id, reference or customer e-mail"}),
    )
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *PaymentStatus.choices])
    currency = forms.ChoiceField(required=False)
    date_from = forms.DateField(label="From", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(label="To", required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A fixed list, not the merchant's distinct currencies (a scan of their payments per
        # page view); a code outside it, given in the URL, is offered and filters too.
        codes = list(COMMON_CURRENCIES)
        asked = self.data.get("currency", "") if self.is_bound else ""
        if CURRENCY_CODE.fullmatch(asked) and asked not in codes:
            codes.append(asked)
        cast(forms.ChoiceField, self.fields["currency"]).choices = [
            ("", "Any currency"),
            *((code, code) for code in codes),
        ]

    def clean(self):
        cleaned_data = super().clean()
        date_from, date_to = cleaned_data.get("date_from"), cleaned_data.get("date_to")
        if date_from and date_to and date_from > date_to:
            self.add_error("date_to", "The end date is before the start date.")
        return cleaned_data

    def apply(self, payments):
        self.is_valid()
        filters = self.cleaned_data
        if filters.get("q"):
            payments = payment_search(payments, filters["q"], staff=False)
        if filters.get("status"):
            payments = payments.filter(status=filters["status"])
        if filters.get("currency"):
            payments = payments.filter(currency=filters["currency"])
        # Days in the merchant's time zone as ranges of aware datetimes: created_at__date
        # would wrap the column in a function and read every payment of the merchant.
        if filters.get("date_from"):
            payments = payments.filter(created_at__gte=day_start(filters["date_from"]))
        if filters.get("date_to"):
            payments = payments.filter(created_at__lt=day_start(filters["date_to"] + timedelta(days=1)))
        return payments


def day_start(day: date) -> datetime:
    """Midnight at the start of `day` in the current time zone, aware."""
    return timezone.make_aware(datetime.combine(day, time.min))


# --- refunds --------------------------------------------------------------------------------

REFUND_SUBMISSION_SALT = "payments.forms.RefundForm.submission"


def refund_submission_token(payment: Payment, user) -> str:
    """The refund form's request key, random and signed for one user and payment: posting the
    same form again (double click, back and resubmit, two tabs) finds the refund it made."""
    return signing.dumps(
        {"payment": payment.public_id, "user": user.pk, "nonce": new_request_key("portal")},
        salt=REFUND_SUBMISSION_SALT,
    )


def refund_submission_key(token: str, *, payment: Payment, user) -> str | None:
    """The request key a submitted refund form carries, or None if it is not a valid token of
    this form (forged, borrowed from another payment or user, expired)."""
    try:
        fields = signing.loads(token or "", salt=REFUND_SUBMISSION_SALT, max_age=24 * 3600)
    except signing.BadSignature:
        return None
    if not isinstance(fields, dict) or fields.get("payment") != payment.public_id or fields.get("user") != user.pk:
        return None
    return fields.get("nonce") or None


class RefundForm(ServiceForm):
    service_fields = {"amount_minor": "amount"}

    amount = forms.CharField(max_length=30)
    reason = forms.CharField(
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Why the money goes back; kept with the refund.",
    )
    submission_token = forms.CharField(widget=forms.HiddenInput)

    def __init__(self, *args, payment: Payment, user, remaining_minor: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.payment, self.user, self.remaining_minor = payment, user, remaining_minor
        self.fields[
            "amount"
        ].help_text = (
            f"In {payment.currency}; up to {format_minor(remaining_minor, payment.currency)} remains refundable."
        )
        if not self.is_bound:
            self.initial.setdefault("amount", format_major(remaining_minor, payment.currency))
            self.initial.setdefault("submission_token", refund_submission_token(payment, user))

    def clean_amount(self) -> int:
        amount_minor = parse_major_amount(self.cleaned_data["amount"], self.payment.currency)
        if amount_minor > self.remaining_minor:
            raise ValidationError(
                f"{format_minor(amount_minor, self.payment.currency)} is more than the "
                f"{format_minor(self.remaining_minor, self.payment.currency)} that remains refundable.",
                code="amount_exceeds_remaining",
            )
        return amount_minor

    def submitted_request_key(self) -> str | None:
        """The request key of the posted form, read before (and whatever) the other fields."""
        return refund_submission_key(self.data.get("submission_token", ""), payment=self.payment, user=self.user)

    def clean_submission_token(self) -> str:
        request_key = refund_submission_key(self.cleaned_data["submission_token"], payment=self.payment, user=self.user)
        if request_key is None:
            raise ValidationError("This form has expired. Check the amount and submit again.", code="bad_token")
        return request_key

    def renew_submission_token(self) -> None:
        self.data = _data_with(self, "submission_token", refund_submission_token(self.payment, self.user))

    def add_service_error(self, error: ValidationError) -> None:
        if not hasattr(error, "error_dict") and error.code == "wrong_status":
            # the service says "not refundable (it is failed)"
            self.add_error(None, f"This payment is {error.messages[0]}.")
        else:
            super().add_service_error(error)


class MerchantSwitchForm(forms.Form):
    merchant = forms.IntegerField(widget=forms.HiddenInput)
