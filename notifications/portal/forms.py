"""Forms of the merchant portal's webhook settings: they parse; the views call
notifications.endpoints and put a service's refusal back on the form."""

from django import forms

from backoffice.forms import ServiceForm
from notifications.events import SUBSCRIBABLE_EVENTS, EventType


class WebhookEndpointForm(ServiceForm):
    url = forms.CharField(
        label="URL",
        max_length=2000,
        help_text="The https:// address of your receiver, on the public internet.",
        widget=forms.TextInput(attrs={"placeholder": "https://shop.example/paydesk/webhooks", "inputmode": "url"}),
    )
    description = forms.CharField(max_length=200, required=False)
    event_types = forms.MultipleChoiceField(
        label="Events",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        choices=[(event, EventType(event).label) for event in SUBSCRIBABLE_EVENTS],
        help_text="Tick none to receive every event.",
    )
