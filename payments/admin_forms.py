"""The admin's forms: "Add payment" and the confirmations of the money-moving actions. They
parse and validate; the admin hands the cleaned data to a service and puts its refusals back."""

import secrets

from django import forms
from django.core.exceptions import ValidationError

from backoffice.forms import ServiceForm
from payments.forms import PaymentForm
from payments.models import Merchant, new_request_key
from payments.money import format_major, format_minor, parse_major_amount
from payments.validators import REQUEST_KEY_PATTERN


def new_idempotency_key() -> str:
    return "admin_" + secrets.token_urlsafe(24)


class PaymentAddForm(PaymentForm):
    """The admin's "Add payment": any active merchant."""

    merchant = forms.ModelChoiceField(queryset=Merchant.objects.filter(is_active=True))
    field_order = ["merchant"]

    def payment_merchant(self) -> Merchant:
        return self.cleaned_data["merchant"]

    def add_service_error(self, error: ValidationError) -> None:
        super().add_service_error(error)
        if hasattr(error, "error_dict") and "idempotency_key" in error.error_dict:
            self.add_error(None, 'To create another payment, open a new "Add payment" form.')


class RequestKeyForm(ServiceForm):
    """A money-moving action's confirmation: a request key is generated when the page is shown
    and posted back hidden, so posting the same page twice (double click, two tabs, a retried
    request) reaches the service with the same key and moves money once."""

    service_fields = {"request_key": None}

    request_key = forms.RegexField(regex=REQUEST_KEY_PATTERN, widget=forms.HiddenInput)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial.setdefault("request_key", new_request_key("admin"))

    def clean(self):
        cleaned_data = super().clean()
        if "request_key" in self.errors:  # hidden: say it above the form
            del self.errors["request_key"]
            self.add_error(None, "This form is out of date: open it again and submit it once more.")
        return cleaned_data


class RefundActionForm(RequestKeyForm):
    """The Refund action's confirmation: with one payment an amount (defaulting to what
    remains refundable); with several, each is refunded by what remains of it."""

    amount = forms.CharField(
        max_length=32, required=False, help_text="In major units, e.g. 12.34. Empty: everything that remains."
    )
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 80}), max_length=2000, strip=True)

    def __init__(self, *args, payment=None, remaining_minor: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.payment = payment
        if payment is None:
            del self.fields["amount"]
        else:
            self.fields["amount"].label = f"Amount ({payment.currency})"
            self.fields[
                "amount"
            ].help_text = (
                f"Remaining refundable: {format_minor(remaining_minor or 0, payment.currency)}. Empty: all of it."
            )
            if not self.is_bound and remaining_minor:
                self.initial["amount"] = format_major(remaining_minor, payment.currency, grouped=True)

    def clean_amount(self):
        text = self.cleaned_data.get("amount", "").strip()
        if not text:
            return None
        return parse_major_amount(text, self.payment.currency)


class SettlementRequestForm(RequestKeyForm):
    settle_as = forms.ChoiceField(
        label="Settle as",
        choices=[("succeeded", "Succeeded: the customer was charged"), ("failed", "Failed: nothing was taken")],
    )
    gateway_reference = forms.CharField(
        label="Processor's charge reference",
        max_length=100,
        required=False,
        help_text="Required when settling as succeeded: refunds of this payment are sent against it.",
    )
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        max_length=2000,
        strip=True,
        help_text="What you checked at the processor. A second person must approve.",
    )


class RefundSettlementRequestForm(SettlementRequestForm):
    """A manual settlement of a refund the gateway never answered clearly."""

    settle_as = forms.ChoiceField(
        label="Settle as",
        choices=[
            ("succeeded", "Succeeded: the processor refunded the customer"),
            ("failed", "Failed: nothing was refunded (its amount is freed)"),
        ],
    )
    gateway_reference = forms.CharField(
        label="Processor's refund reference",
        max_length=100,
        required=False,
        help_text="What the processor calls this refund, when it made it.",
    )


class DecisionForm(ServiceForm):
    note = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        max_length=2000,
        strip=True,
        help_text="Recorded with your name; the requester sees it.",
    )


class PaymentImportForm(forms.Form):
    merchant = forms.ModelChoiceField(queryset=Merchant.objects.filter(is_active=True).order_by("name"))
    file = forms.FileField(
        label="CSV file",
        help_text=(
            "One payment per line. Columns: amount (major units, 12.34), currency, payment_method (a token), "
            "idempotency_key; optional: merchant_reference, customer_email, description."
        ),
    )
