"""The error every notifications service raises when it refuses an operation."""

from django.core.exceptions import ValidationError


class NotificationError(ValidationError):
    """A refused notifications operation; its message is fit to show the user."""
