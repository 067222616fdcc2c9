"""Forms shared by the admin and the merchant portal. They parse and validate; the views hand
`cleaned_data` to payments.services and put a service's refusal back on the form. No form
saves a payment model."""

from django import forms
from django.core.exceptions import ValidationError

from backoffice.forms import ServiceForm
from payments.models import Merchant
from payments.money import parse_major_amount, validate_currency


class PaymentForm(ServiceForm):
    """A new payment's fields, parsed for payments.services.payment_create (the amount in
    major units becomes `amount_minor`). Subclasses say which merchant it is for."""

    # The key is generated in a hidden field: its errors must be visible above the form.
    service_fields = {"amount_minor": "amount", "idempotency_key": None}

    amount = forms.CharField(max_length=30, help_text="In the currency's major unit: 12.34 EUR, 1200 JPY, 1.234 KWD.")
    # Typed as any field: the portal's form offers lists of choices instead.
    currency: forms.Field = forms.CharField(min_length=3, max_length=3, help_text="ISO 4217 code, such as EUR.")
    payment_method: forms.Field = forms.CharField(
        label="Payment method token",
        max_length=64,
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
        return cleaned_data

    def payment_merchant(self) -> Merchant:
        raise NotImplementedError

    def payment_create_kwargs(self) -> dict:
        """The keyword arguments of payments.services.payment_create, without the actor."""
        data = self.cleaned_data
        return {
            "merchant": self.payment_merchant(),
            "amount_minor": data["amount_minor"],
            "currency": data["currency"],
            "payment_method": data["payment_method"],
            "idempotency_key": data["idempotency_key"],
            "merchant_reference": data["merchant_reference"],
            "customer_email": data["customer_email"],
            "description": data["description"],
        }
