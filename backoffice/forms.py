"""The base of every form whose cleaned data goes to a service (admin and merchant portal)."""

from django import forms
from django.core.exceptions import ValidationError


class ServiceForm(forms.Form):
    """A form that parses and validates; the view hands `cleaned_data` to a service and puts
    the service's refusal back with `add_service_error`, each message on the field it names."""

    # The service's argument names that differ from this form's fields; None puts the message
    # above the form. Names that are neither here nor a field also go above the form.
    service_fields: dict[str, str | None] = {}

    def add_service_error(self, error: ValidationError) -> None:
        if not hasattr(error, "error_dict"):
            self.add_error(None, error)
            return
        for name, errors in error.error_dict.items():
            field = self.service_fields.get(name, name)
            self.add_error(field if field in self.fields else None, errors)
