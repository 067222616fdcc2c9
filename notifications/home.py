"""Notifications' items on the admin's home page: webhook endpoints that stopped and
deliveries that gave up."""

from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from backoffice.dashboard import attention_item, register_attention
from notifications.models import Channel, Notification, NotificationStatus, WebhookEndpoint


def webhooks_attention(request) -> list:
    if not request.user.has_perm("notifications.change_webhookendpoint"):
        return []
    day_ago = timezone.now() - timedelta(days=1)
    endpoints = reverse("admin:notifications_webhookendpoint_changelist")
    notifications = reverse("admin:notifications_notification_changelist")
    candidates = [
        attention_item(
            "Webhook endpoints disabled",
            WebhookEndpoint.objects.filter(enabled=False),
            endpoints + "?enabled__exact=0",
        ),
        attention_item(
            "Webhook deliveries failed for good (24 h)",
            Notification.objects.filter(
                channel=Channel.WEBHOOK, status=NotificationStatus.FAILED, created_at__gte=day_ago
            ),
            notifications + f"?channel__exact=webhook&status__exact=failed&created_at__gte={day_ago:%Y-%m-%d}",
            severity="error",
        ),
        attention_item(
            "Webhook deliveries retrying",
            Notification.objects.filter(
                channel=Channel.WEBHOOK, status=NotificationStatus.PENDING, attempt_count__gte=1
            ),
            notifications + "?channel__exact=webhook&status__exact=pending",
        ),
    ]
    return [item for item in candidates if item]


def register() -> None:
    register_attention(webhooks_attention)
