"""The error every payments service raises when it refuses an operation."""

from django.core.exceptions import ValidationError


class PaymentError(ValidationError):
    """A refused operation on a payment; its message is fit to show the user."""
