import json
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from ledger.models import Payout
from notifications.events import SUBSCRIBABLE_EVENTS, EventType
from notifications.signing import new_signing_secret
from notifications.transport import validate_webhook_url
from payments.models import Merchant, Payment, PaymentEvent, Refund


class WebhookEndpoint(models.Model):
    """Where a merchant receives signed webhooks. The URL is checked for SSRF when saved
    (through full_clean / the services) and again before every delivery."""

    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="webhook_endpoints")
    url = models.CharField(
        "URL",
        max_length=2000,
        validators=[validate_webhook_url],
        help_text="An https:// URL on the public internet.",
    )
    description = models.CharField(max_length=200, blank=True)
    event_types = models.JSONField(
        default=list, blank=True, help_text="The events this endpoint receives; empty means all of them."
    )
    enabled = models.BooleanField(default=True)
    secret = models.CharField("signing secret", max_length=100, default=new_signing_secret, editable=False)
    previous_secret = models.CharField(max_length=100, blank=True, editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    secret_rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    disabled_reason = models.CharField(max_length=255, blank=True, editable=False)
    disabled_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["merchant", "created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(enabled=True) | models.Q(disabled_at__isnull=False),
                name="webhook_endpoint_disabled_has_time",
            ),
            models.CheckConstraint(
                condition=models.Q(secret__startswith="whsec_"), name="webhook_endpoint_secret_format"
            ),
            models.UniqueConstraint(
                fields=["merchant", "url"],
                name="webhook_endpoint_url_once_per_merchant",
                violation_error_message="You already have an endpoint with this URL.",
            ),
        ]
        permissions = [
            ("send_test_webhook", "Can send a test webhook to an endpoint"),
            ("rotate_webhook_secret", "Can rotate an endpoint's signing secret"),
            ("enable_webhookendpoint", "Can disable or re-enable a webhook endpoint"),
            ("view_webhook_secret", "Can see an endpoint's signing secret"),
        ]

    def __str__(self) -> str:
        return f"{self.merchant}: {self.url}"

    def clean(self):
        if not isinstance(self.event_types, list):
            raise ValidationError({"event_types": "Give the event types as a list."})
        unknown = [str(name) for name in self.event_types if name not in SUBSCRIBABLE_EVENTS]
        if unknown:
            raise ValidationError(
                {
                    "event_types": f"Unknown event types: {', '.join(unknown)}. "
                    f"Choose from {', '.join(SUBSCRIBABLE_EVENTS)}."
                }
            )

    def wants(self, event_type: str) -> bool:
        if not self.enabled or event_type not in SUBSCRIBABLE_EVENTS:
            return False
        return not self.event_types or event_type in self.event_types

    def signing_secrets(self, at: datetime) -> list[str]:
        """The secrets that sign now: the current one, and the previous one until its overlap ends."""
        active = [self.secret]
        if self.previous_secret and self.previous_secret_expires_at and at < self.previous_secret_expires_at:
            active.append(self.previous_secret)
        return active


class EndpointChangeStatus(models.TextChoices):
    REQUESTED = "requested", "awaiting approval"
    APPROVED = "approved", "approved"
    REJECTED = "rejected", "rejected"


class WebhookEndpointChange(models.Model):
    """A staff member's new endpoint, or new URL for one, for a merchant: where that merchant's
    payment data goes. Nothing changes until a second staff member approves (four eyes, as
    refunds); until then deliveries keep going to the endpoint's current URL."""

    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="+")
    endpoint = models.ForeignKey(
        WebhookEndpoint,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="changes",
        help_text="Empty: a new endpoint.",
    )
    url = models.CharField("URL", max_length=2000, validators=[validate_webhook_url])
    description = models.CharField(max_length=200, blank=True)
    event_types = models.JSONField(default=list, blank=True)
    status = models.CharField(
        max_length=20, choices=EndpointChangeStatus.choices, default=EndpointChangeStatus.REQUESTED
    )
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decision_note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "webhook URL change"
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=EndpointChangeStatus.values), name="endpoint_change_status_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(decided_by__isnull=True) | ~models.Q(decided_by=models.F("requested_by")),
                name="endpoint_change_decider_not_requester",
            ),
            models.UniqueConstraint(
                fields=["endpoint"],
                condition=models.Q(status="requested"),
                name="one_open_change_per_endpoint",
            ),
        ]
        permissions = [("approve_webhookendpointchange", "Can approve another person's webhook URL change")]

    def __str__(self) -> str:
        what = f"new endpoint {self.url}" if self.endpoint is None else f"{self.endpoint.url} -> {self.url}"
        return f"{self.merchant}: {what} ({self.get_status_display()})"


class Channel(models.TextChoices):
    WEBHOOK = "webhook", "Webhook"
    EMAIL = "email", "E-mail"


class NotificationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERING = "delivering", "Delivering"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"
    DISABLED = "disabled", "Endpoint disabled"


class Notification(models.Model):
    """One message about one event to one destination. Its event id is the webhook-id on
    every retry; a resend is a new Notification with the same event id."""

    # Built from texts already checked, and an error kept for the record: masked, never refused
    # (a refusal here would roll back the state change that sent the event).
    card_numbers_masked = ("body", "last_error")

    event_id = models.CharField(max_length=40, db_index=True)
    event_type = models.CharField(max_length=50, choices=EventType.choices)
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="notifications")
    payment = models.ForeignKey(Payment, null=True, blank=True, on_delete=models.PROTECT, related_name="notifications")
    payment_event = models.ForeignKey(
        PaymentEvent,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The status change that raised it.",
    )
    refund = models.ForeignKey(Refund, null=True, blank=True, on_delete=models.PROTECT, related_name="notifications")
    payout = models.ForeignKey(Payout, null=True, blank=True, on_delete=models.PROTECT, related_name="notifications")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    endpoint = models.ForeignKey(
        WebhookEndpoint, null=True, blank=True, on_delete=models.PROTECT, related_name="notifications"
    )
    destination = models.CharField(max_length=2000, help_text="The URL or e-mail address when it was created.")
    body = models.TextField("payload", help_text="The JSON body exactly as sent.")
    status = models.CharField(max_length=20, choices=NotificationStatus.choices, default=NotificationStatus.PENDING)
    attempt_count = models.PositiveIntegerField("tries", default=0)
    next_attempt_at = models.DateTimeField("next attempt", null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    resend_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="resends")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="notification_status_next"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=NotificationStatus.values), name="notification_status_valid"
            ),
            models.CheckConstraint(condition=models.Q(channel__in=Channel.values), name="notification_channel_valid"),
            models.CheckConstraint(
                condition=~models.Q(channel=Channel.WEBHOOK) | models.Q(endpoint__isnull=False),
                name="notification_webhook_has_endpoint",
            ),
            # A status change notifies each endpoint (and the contact address) once; only an
            # explicit resend repeats it.
            models.UniqueConstraint(
                fields=["event_id", "endpoint"],
                condition=models.Q(resend_of__isnull=True, channel=Channel.WEBHOOK),
                name="notification_once_per_endpoint",
            ),
            models.UniqueConstraint(
                fields=["event_id", "destination"],
                condition=models.Q(resend_of__isnull=True, channel=Channel.EMAIL),
                name="notification_email_once_per_address",
            ),
        ]
        permissions = [("resend_notification", "Can resend a notification (same event id)")]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} -> {self.get_channel_display().lower()} [{self.status}]"

    @property
    def payload(self) -> dict:
        return json.loads(self.body)

    def is_finished(self) -> bool:
        return self.status in (NotificationStatus.DELIVERED, NotificationStatus.FAILED, NotificationStatus.DISABLED)


class DeliveryAttempt(models.Model):
    """One try at delivering a notification: what we sent to, what came back."""

    notification = models.ForeignKey(Notification, on_delete=models.PROTECT, related_name="attempts")
    number = models.PositiveIntegerField()
    # What the receiver answered and our error: kept for the record, card numbers masked.
    card_numbers_masked = ("response_excerpt", "error")

    destination = models.CharField(max_length=2000)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    http_status = models.PositiveSmallIntegerField("HTTP status", null=True, blank=True)
    succeeded = models.BooleanField(null=True, help_text="Empty while the try is in flight.")
    response_excerpt = models.TextField(blank=True, help_text="The start of the receiver's answer (bounded).")
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["notification", "number"]
        constraints = [
            models.UniqueConstraint(fields=["notification", "number"], name="delivery_attempt_number_once"),
        ]

    def __str__(self) -> str:
        return f"{self.notification.event_id} try {self.number}"
