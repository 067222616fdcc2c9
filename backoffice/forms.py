"""The base of every form whose cleaned data goes to a service (admin and merchant portal),
and what keeps card numbers out of every form of the project: a field typed with one is
refused without repeating it, and no page shows it again (`CardNumberSafeRenderer`)."""

from django import forms
from django.core.exceptions import ValidationError
from django.forms.renderers import DjangoTemplates
from django.forms.utils import ErrorList

from backoffice.card_numbers import REFUSED, card_number_errors, holds_card_number, mask_card_numbers


def refuse_typed_card_numbers(form: forms.BaseForm) -> None:
    """After validation: every field whose submitted value holds a card number has that one
    error only (Django's own messages may quote the value: "Select a valid choice. 4242…")."""
    if not form.is_bound:
        return
    for name, field in form.fields.items():
        value = field.widget.value_from_datadict(form.data, form.files, form.add_prefix(name))
        if holds_card_number(value):
            form.errors[name] = form.error_class([REFUSED], renderer=form.renderer)
            form.cleaned_data.pop(name, None)


class ServiceForm(forms.Form):
    """A form that parses and validates; the view hands `cleaned_data` to a service and puts
    the service's refusal back with `add_service_error`, each message on the field it names."""

    # The service's argument names that differ from this form's fields; None puts the message
    # above the form. Names that are neither here nor a field also go above the form.
    service_fields: dict[str, str | None] = {}

    def full_clean(self):
        super().full_clean()
        refuse_typed_card_numbers(self)

    def add_service_error(self, error: ValidationError) -> None:
        if not hasattr(error, "error_dict"):
            self.add_error(None, error)
            return
        for name, errors in error.error_dict.items():
            field = self.service_fields.get(name, name)
            self.add_error(field if field in self.fields else None, errors)


class CardNumberCheckedModelForm(forms.ModelForm):
    """The admin's model forms: the instance's text fields get the same card-number check as
    every save (backoffice.card_numbers), as errors on the form instead of a refused save."""

    def full_clean(self):
        super().full_clean()
        refuse_typed_card_numbers(self)
        # The page shows the instance again (its title is the object's name): as it was.
        for name, errors in self.errors.items():
            field = self._meta.model._meta._forward_fields_map.get(name)
            if REFUSED in errors and field is not None and name in self.initial:
                setattr(self.instance, field.attname, self.initial[name])

    def _post_clean(self):
        super()._post_clean()
        model = type(self.instance)
        values = {field.name: getattr(self.instance, field.name) for field in model._meta.concrete_fields}
        for name, messages in card_number_errors(model, values).items():
            if name in self.fields and not self.has_error(name):
                self.add_error(name, messages)


class CardNumberSafeRenderer(DjangoTemplates):
    """The project's form renderer (FORM_RENDERER): a submitted value holding a card number is
    never written back into a field (`value="…"`), and error messages show it masked."""

    def render(self, template_name, context, request=None):
        widget = context.get("widget")
        if isinstance(widget, dict) and holds_card_number(widget.get("value")):
            context = {**context, "widget": {**widget, "value": None}}
        errors = context.get("errors")
        if isinstance(errors, ErrorList) and any(holds_card_number(str(message)) for message in errors):
            masked = errors.copy()
            masked.field_id = errors.field_id
            masked.data = [mask_card_numbers(str(message)) for message in errors]
            context = {**context, "errors": masked}
        return super().render(template_name, context, request=request)
