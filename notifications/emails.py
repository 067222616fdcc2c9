"""The e-mails merchants get: subject, text and HTML bodies rendered from a notification's
payload (the event as it was when it happened), sent through Django's e-mail backend."""

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string

from notifications.events import EventType
from payments.money import format_minor

PAYMENT_HEADLINES = {
    EventType.PAYMENT_SUCCEEDED: "succeeded",
    EventType.PAYMENT_FAILED: "failed",
    EventType.PAYMENT_CANCELED: "was canceled",
    EventType.PAYMENT_PARTIALLY_REFUNDED: "was partly refunded",
    EventType.PAYMENT_REFUNDED: "was refunded",
}


def _template_and_context(notification) -> tuple[str, str, dict]:
    payload = notification.payload
    data = payload.get("data", {})
    context = {
        "merchant": notification.merchant,
        "event_id": payload.get("id"),
        "event_type": payload.get("type"),
        "event_label": EventType(notification.event_type).label,
        "occurred_at": payload.get("timestamp"),
        "data": data,
    }
    if data.get("object") == "payment":
        headline = PAYMENT_HEADLINES.get(notification.event_type, notification.event_type)
        context.update(headline=headline, amount=format_minor(data["amount_minor"], data["currency"]))
        return "emails/payment_event", f"Payment {data['id']} {headline}", context
    if notification.event_type == EventType.WEBHOOK_ENDPOINT_DISABLED:
        return "emails/webhook_endpoint_disabled", "Your webhook endpoint was disabled", context
    raise ValueError(f"No e-mail template for {notification.event_type}")


def notification_email(notification) -> EmailMultiAlternatives:
    """The message for an e-mail notification, with a text body and an HTML alternative."""
    template, subject, context = _template_and_context(notification)
    message = EmailMultiAlternatives(
        subject=f"[Paydesk] {subject}",
        body=render_to_string(f"{template}.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[notification.destination],
        headers={"X-Paydesk-Event-Id": notification.event_id},
    )
    message.attach_alternative(render_to_string(f"{template}.html", context), "text/html")
    return message
