"""The admin's "Add payment" form: it parses and validates; the admin view hands the cleaned
data to payments.services.payment_create and puts the service's refusals back on the form."""

import secrets

from django import forms
from django.core.exceptions import ValidationError

from payments.models import Merchant
from payments.money import parse_major_amount, validate_currency
from payments.validators import contains_card_number

# payment_create's argument names -> this form's fields; None puts the error above the form.
SERVICE_FIELDS = {
    "merchant": "merchant",
    "amount_minor": "amount",
    "currency": "currency",
    "payment_method": "payment_method",
    "merchant_reference": "merchant_reference",
    "customer_email": "customer_email",
    "description": "description",
    # The key is generated in a hidden field: its errors must be visible above the form.
    "idempotency_key": None,
}


def new_idempotency_key() -> str:
    return "admin_" + secrets.token_urlsafe(24)


class TokenInput(forms.TextInput):
    """Never echo a card number back into the page when the form is shown again with errors."""

    def format_value(self, value):
        if value and contains_card_number(str(value)):
            return None
        return super().format_value(value)


class PaymentAddForm(forms.Form):
    merchant = forms.ModelChoiceField(queryset=Merchant.objects.filter(is_active=True))
    amount = forms.CharField(max_length=30, help_text="In the currency's major unit: 12.34 EUR, 1200 JPY, 1.234 KWD.")
    currency = forms.CharField(min_length=3, max_length=3, help_text="ISO 4217 code, such as EUR.")
    payment_method = forms.CharField(
        label="Payment method token",
        max_length=64,
        widget=TokenInput,
        help_text="A token such as tok_success. Card numbers are never accepted.",
    )
    merchant_reference = forms.CharField(max_length=100, required=False)
    customer_email = forms.EmailField(required=False)
    description = forms.CharField(max_length=255, required=False)
    # Generated when the form is shown: submitting the same form twice makes one payment.
    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=100)

    def clean_currency(self) -> str:
        currency = self.cleaned_data["currency"].strip().upper()
        validate_currency(currency)
        return currency

    def clean(self):
        cleaned_data = super().clean()
        if "amount" in cleaned_data and "currency" in cleaned_data:
            try:
                cleaned_data["amount_minor"] = parse_major_amount(cleaned_data["amount"], cleaned_data["currency"])
            except ValidationError as error:
                self.add_error("amount", error)
            except ArithmeticError:  # decimal.Overflow from exponents such as 1e999999
                self.add_error("amount", "Enter an amount such as 12.34.")
        return cleaned_data

    def payment_create_kwargs(self) -> dict:
        """The keyword arguments of payments.services.payment_create, without the actor."""
        data = self.cleaned_data
        return {
            "merchant": data["merchant"],
            "amount_minor": data["amount_minor"],
            "currency": data["currency"],
            "payment_method": data["payment_method"],
            "idempotency_key": data["idempotency_key"],
            "merchant_reference": data["merchant_reference"],
            "customer_email": data["customer_email"],
            "description": data["description"],
        }

    def add_service_error(self, error: ValidationError) -> None:
        """Put a refusal from payment_create on the fields it names."""
        if not hasattr(error, "error_dict"):
            self.add_error(None, error)
            return
        for name, errors in error.error_dict.items():
            self.add_error(SERVICE_FIELDS.get(name), errors)
        if "idempotency_key" in error.error_dict:
            self.add_error(None, 'To create another payment, open a new "Add payment" form.')


class RefundActionForm(forms.Form):
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
            from payments.money import format_minor

            self.fields["amount"].label = f"Amount ({payment.currency})"
            self.fields[
                "amount"
            ].help_text = (
                f"Remaining refundable: {format_minor(remaining_minor or 0, payment.currency)}. Empty: all of it."
            )
            if not self.is_bound and remaining_minor:
                self.initial["amount"] = format_minor(remaining_minor, payment.currency).split(" ")[0]

    def clean_amount(self):
        text = self.cleaned_data.get("amount", "").strip()
        if not text:
            return None
        return parse_major_amount(text, self.payment.currency)


class SettlementRequestForm(forms.Form):
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


class DecisionForm(forms.Form):
    note = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        max_length=2000,
        strip=True,
        help_text="Recorded with your name; the requester sees it.",
    )
