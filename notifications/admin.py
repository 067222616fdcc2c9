"""Admin of merchant notifications: endpoints (test send, secret rotation, disable and
re-enable), the notification log with each try, and a payment's notifications on the
payment's own page (added from here: payments does not know notifications exist)."""

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from backoffice.admin import ReadOnlyAdminMixin, pretty_json
from backoffice.admin_actions import ObjectButtons, apply_each, confirm_with_form, confirm_with_reason
from backoffice.admin_base import PaydeskModelAdmin
from backoffice.forms import CardNumberCheckedModelForm
from notifications.delivery import notification_resend
from notifications.endpoints import (
    EDITABLE_ENDPOINT_FIELDS,
    webhook_endpoint_change_approve,
    webhook_endpoint_change_reject,
    webhook_endpoint_change_request,
    webhook_endpoint_disable,
    webhook_endpoint_enable,
    webhook_endpoint_rotate_secret,
    webhook_endpoint_update,
    webhook_test_send,
)
from notifications.events import SUBSCRIBABLE_EVENTS, EventType
from notifications.models import (
    DeliveryAttempt,
    EndpointChangeStatus,
    Notification,
    WebhookEndpoint,
    WebhookEndpointChange,
)
from notifications.signing import mask_secret
from payments.admin import AwaitingMyApprovalFilter, JobInline, PaymentAdmin
from payments.admin_forms import DecisionForm


def _attempts_summary(notification: Notification) -> str:
    """'3 tries: 500, error, 200' (or 'sent' for an e-mail) from prefetched attempts."""
    attempts = list(notification.attempts.all())
    if not attempts:
        return "-"
    outcomes = [
        str(attempt.http_status)
        if attempt.http_status
        else {None: "in flight", True: "sent", False: "error"}[attempt.succeeded]
        for attempt in attempts
    ]
    return f"{len(attempts)} {'try' if len(attempts) == 1 else 'tries'}: {', '.join(outcomes)}"


# --- endpoints -------------------------------------------------------------------------------


class WebhookEndpointForm(CardNumberCheckedModelForm):
    event_types = forms.MultipleChoiceField(
        choices=[(name, EventType(name).label) for name in SUBSCRIBABLE_EVENTS],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="None ticked: every event.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["merchant", "url", "description", "event_types"]
        widgets = {"url": forms.TextInput(attrs={"size": 80})}

    def clean(self):
        cleaned_data = super().clean()
        endpoint = self.instance
        if endpoint.pk and "url" in self.changed_data and endpoint.changes.filter(status="requested").exists():
            self.add_error("url", "A URL change of this endpoint already awaits approval: approve or reject it first.")
        return cleaned_data


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(PaydeskModelAdmin):
    form = WebhookEndpointForm
    list_display = ["url", "merchant", "enabled", "subscribed", "secret_masked", "disabled_reason", "created_at"]
    list_filter = ["enabled", "merchant"]
    search_fields = ["url", "description", "merchant__name", "merchant__slug"]
    list_select_related = ["merchant"]
    actions = ["send_test", "rotate_secret", "reenable", "disable"]
    readonly_fields = [
        "enabled",
        "signing_secret",
        "signing_secret_masked",
        "previous_secret_expires_at",
        "secret_rotated_at",
        "disabled_reason",
        "disabled_at",
        "created_at",
        "updated_at",
    ]

    def get_fieldsets(self, request, obj=None):
        fieldsets = [(None, {"fields": ["merchant", "url", "description", "event_types"]})]
        if obj is not None:
            may_see = request.user.has_perm("notifications.view_webhook_secret")
            secret_field = "signing_secret" if may_see else "signing_secret_masked"
            fieldsets += [
                ("Signing", {"fields": [secret_field, "secret_rotated_at", "previous_secret_expires_at"]}),
                ("State", {"fields": ["enabled", "disabled_reason", "disabled_at", "created_at", "updated_at"]}),
            ]
        return fieldsets

    def get_readonly_fields(self, request, obj=None):
        # The merchant of an existing endpoint is fixed: its notifications belong to it.
        return [*self.readonly_fields, "merchant"] if obj is not None else self.readonly_fields

    def has_delete_permission(self, request, obj=None):
        return False  # the notification log keeps its endpoints: disable one instead

    def save_model(self, request, obj, form, change):
        # The form has shown the model's refusals next to its fields; the services check the
        # URL again, lock, save and audit. Where a merchant's webhooks go is a four-eyes change
        # for staff: a new endpoint or a new URL waits for a second person's approval.
        fields = {name: getattr(obj, name) for name in EDITABLE_ENDPOINT_FIELDS}
        if change and "url" not in form.changed_data:
            webhook_endpoint_update(endpoint=obj, actor=request.user, **fields)
            obj.refresh_from_db()  # the times the service saved, for the admin's log and redirect
            return
        current = WebhookEndpoint.objects.get(pk=obj.pk) if change else None
        obj.url_change = webhook_endpoint_change_request(
            merchant=obj.merchant, endpoint=current, requested_by=request.user, **fields
        )

    def log_addition(self, request, obj, message):
        if not hasattr(obj, "url_change"):  # a requested endpoint is not added yet
            super().log_addition(request, obj, message)

    def log_change(self, request, obj, message):
        if not hasattr(obj, "url_change"):
            super().log_change(request, obj, message)

    def response_add(self, request, obj, post_url_continue=None):
        if hasattr(obj, "url_change"):
            return self._change_requested(request, obj.url_change)
        return super().response_add(request, obj, post_url_continue)

    def response_change(self, request, obj):
        if hasattr(obj, "url_change"):
            return self._change_requested(request, obj.url_change)
        return super().response_change(request, obj)

    def _change_requested(self, request, url_change: WebhookEndpointChange):
        self.message_user(
            request,
            "The URL change awaits a second person's approval; until then webhooks keep going where they went.",
            messages.WARNING,
        )
        return HttpResponseRedirect(reverse("admin:notifications_webhookendpointchange_change", args=[url_change.pk]))

    @admin.display(description="events")
    def subscribed(self, endpoint: WebhookEndpoint) -> str:
        return ", ".join(endpoint.event_types) if endpoint.event_types else "all"

    @admin.display(description="secret")
    def secret_masked(self, endpoint: WebhookEndpoint) -> str:
        return mask_secret(endpoint.secret)

    @admin.display(description="signing secret")
    def signing_secret(self, endpoint: WebhookEndpoint) -> str:
        return format_html("<code>{}</code>", endpoint.secret)

    @admin.display(description="signing secret")
    def signing_secret_masked(self, endpoint: WebhookEndpoint) -> str:
        return format_html("<code>{}</code> (shown only to staff who may see secrets)", mask_secret(endpoint.secret))

    def has_send_test_permission(self, request) -> bool:
        return request.user.has_perm("notifications.send_test_webhook")

    def has_rotate_secret_permission(self, request) -> bool:
        return request.user.has_perm("notifications.rotate_webhook_secret")

    def has_enable_permission(self, request) -> bool:
        return request.user.has_perm("notifications.enable_webhookendpoint")

    @admin.action(description="Send a test webhook", permissions=["send_test"])
    def send_test(self, request, queryset):
        report = apply_each(queryset, lambda endpoint: webhook_test_send(endpoint=endpoint, actor=request.user))
        self.message_user(request, report.message("test webhooks queued"), report.level)

    @admin.action(
        description="Rotate the signing secret (the old one signs for an overlap)", permissions=["rotate_secret"]
    )
    def rotate_secret(self, request, queryset):
        return confirm_with_reason(
            self,
            request,
            queryset,
            verb="rotate the secret of",
            done="rotated",
            apply=lambda endpoint, reason: webhook_endpoint_rotate_secret(
                endpoint=endpoint, actor=request.user, reason=reason
            ),
        )

    @admin.action(description="Re-enable disabled endpoints", permissions=["enable"])
    def reenable(self, request, queryset):
        return confirm_with_reason(
            self,
            request,
            queryset,
            verb="re-enable",
            done="re-enabled",
            apply=lambda endpoint, reason: webhook_endpoint_enable(
                endpoint=endpoint, actor=request.user, reason=reason
            ),
        )

    @admin.action(description="Disable endpoints (the merchant is e-mailed)", permissions=["enable"])
    def disable(self, request, queryset):
        return confirm_with_reason(
            self,
            request,
            queryset,
            verb="disable",
            done="disabled",
            apply=lambda endpoint, reason: webhook_endpoint_disable(
                endpoint=endpoint, actor=request.user, reason=reason
            ),
        )


def describe_change(change: WebhookEndpointChange) -> str:
    was = f"from {change.endpoint.url} " if change.endpoint is not None else "new endpoint "
    return f"{change.merchant}: {was}to {change.url}, asked by {change.requested_by}"


@admin.register(WebhookEndpointChange)
class WebhookEndpointChangeAdmin(ObjectButtons, ReadOnlyAdminMixin, PaydeskModelAdmin):
    """Staff changes of where a merchant's webhooks go, awaiting a second person."""

    object_buttons = [
        ("approve", "Approve", lambda change: change.status == EndpointChangeStatus.REQUESTED),
        ("reject", "Reject", lambda change: change.status == EndpointChangeStatus.REQUESTED),
    ]
    list_display = ["merchant", "current_url", "url", "status", "requested_by", "decided_by", "created_at"]
    list_filter = [AwaitingMyApprovalFilter, "status"]
    search_fields = ["url", "merchant__name", "merchant__slug"]
    list_select_related = ["merchant", "endpoint", "requested_by", "decided_by"]
    actions = ["approve", "reject"]
    fields = (
        "merchant",
        "endpoint",
        "current_url",
        "url",
        "description",
        "event_types",
        "status",
        "requested_by",
        "decided_by",
        "decision_note",
        "created_at",
        "decided_at",
    )
    readonly_fields = fields

    @admin.display(description="current URL")
    def current_url(self, change: WebhookEndpointChange) -> str:
        return change.endpoint.url if change.endpoint is not None else "(new endpoint)"

    def has_approve_permission(self, request) -> bool:
        return request.user.has_perm("notifications.approve_webhookendpointchange")

    @admin.action(description="Approve URL changes (as the second person)", permissions=["approve"])
    def approve(self, request, queryset):
        return confirm_with_form(
            self,
            request,
            queryset,
            verb="approve",
            describe=describe_change,
            done="applied",
            form_class=DecisionForm,
            apply=lambda change, data: webhook_endpoint_change_approve(
                change=change, approver=request.user, note=data["note"]
            ),
        )

    @admin.action(description="Reject URL changes", permissions=["approve"])
    def reject(self, request, queryset):
        return confirm_with_form(
            self,
            request,
            queryset,
            verb="reject",
            describe=describe_change,
            done="rejected",
            form_class=DecisionForm,
            apply=lambda change, data: webhook_endpoint_change_reject(
                change=change, approver=request.user, note=data["note"]
            ),
        )


# --- notifications and their tries -----------------------------------------------------------


class DeliveryAttemptInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    verbose_name_plural = "tries"
    fields = readonly_fields = (
        "number",
        "started_at",
        "succeeded",
        "http_status",
        "duration_ms",
        "error",
        "response_excerpt",
        "destination",
    )


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdminMixin, PaydeskModelAdmin):
    list_display = [
        "event_id",
        "event_type",
        "channel",
        "short_destination",
        "status",
        "tries",
        "next_attempt_at",
        "payment_link",
        "merchant",
        "created_at",
    ]
    list_filter = ["status", "event_type", "merchant", "channel", "created_at"]
    search_fields = ["event_id", "payment__public_id", "destination"]
    list_select_related = ["merchant", "payment"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    actions = ["resend"]
    inlines = [DeliveryAttemptInline, JobInline]
    fields = readonly_fields = (
        "event_id",
        "event_type",
        "status",
        "channel",
        "destination",
        "endpoint",
        "merchant",
        "payment_link",
        "attempt_count",
        "next_attempt_at",
        "delivered_at",
        "last_error",
        "resend_of",
        "requested_by",
        "created_at",
        "updated_at",
        "payload_display",
    )

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("attempts")

    @admin.display(description="destination")
    def short_destination(self, notification: Notification) -> str:
        text = notification.destination
        return text if len(text) <= 60 else f"{text[:57]}…"

    @admin.display(description="tries")
    def tries(self, notification: Notification) -> str:
        return _attempts_summary(notification)

    @admin.display(description="payment")
    def payment_link(self, notification: Notification) -> str:
        payment = notification.payment
        if payment is None:
            return "-"
        url = reverse("admin:payments_payment_change", args=[payment.pk])
        return format_html('<a href="{}">{}</a>', url, payment.public_id)

    @admin.display(description="payload")
    def payload_display(self, notification: Notification) -> str:
        return pretty_json(notification.payload)

    def has_resend_permission(self, request) -> bool:
        return request.user.has_perm("notifications.resend_notification")

    @admin.action(description="Resend (a new delivery with the same event id)", permissions=["resend"])
    def resend(self, request, queryset):
        return confirm_with_reason(
            self,
            request,
            queryset,
            verb="resend",
            done="queued again",
            apply=lambda notification, reason: notification_resend(
                notification=notification, actor=request.user, reason=reason
            ),
        )


# --- on the payment's page ---------------------------------------------------------------------


class PaymentNotificationInline(ReadOnlyAdminMixin, admin.TabularInline):
    """A payment's notifications, each linking to its page with every try."""

    model = Notification
    fk_name = "payment"
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ["-created_at", "-id"]
    verbose_name_plural = "notifications"
    fields = readonly_fields = (
        "event_type",
        "channel",
        "destination",
        "status",
        "tries",
        "last_error",
        "next_attempt_at",
        "created_at",
    )

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("attempts")

    @admin.display(description="tries")
    def tries(self, notification: Notification) -> str:
        return _attempts_summary(notification)


def show_notifications_on_payment_page(payment_admin_class=PaymentAdmin) -> None:
    """Append our inline to the payment admin (once), from this side of the dependency."""
    if PaymentNotificationInline not in payment_admin_class.inlines:
        payment_admin_class.inlines = [*payment_admin_class.inlines, PaymentNotificationInline]


show_notifications_on_payment_page()
