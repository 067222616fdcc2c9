"""The merchant portal's webhook settings, at /merchant/webhooks/ (owners only), and the
notifications parts of the portal's dashboard and payment pages.

Payments never imports notifications: this module uses the portal's access rules from
payments.portal and fills the seams payments.portal.sections offers (its receivers are
connected by notifications.receivers.connect_receivers; its URLs are in notifications.portal.urls)."""

from datetime import timedelta

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Prefetch
from django.http import Http404
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from notifications.endpoints import (
    EDITABLE_ENDPOINT_FIELDS,
    webhook_endpoint_create,
    webhook_endpoint_disable,
    webhook_endpoint_enable,
    webhook_endpoint_rotate_secret,
    webhook_endpoint_update,
    webhook_test_send,
)
from notifications.models import Channel, DeliveryAttempt, Notification, NotificationStatus, WebhookEndpoint
from notifications.portal.forms import WebhookEndpointForm
from notifications.signing import mask_secret
from payments.portal.access import merchant_view
from payments.portal.reports import AttentionItem

RECENT_NOTIFICATIONS = 20


def _endpoint_or_404(request, endpoint_id: int) -> WebhookEndpoint:
    """The current merchant's endpoint; another merchant's answers like one that does not exist."""
    try:
        return WebhookEndpoint.objects.get(pk=endpoint_id, merchant=request.merchant)
    except WebhookEndpoint.DoesNotExist:
        raise Http404("No such endpoint.") from None


def _with_attempts(notifications):
    return notifications.prefetch_related(Prefetch("attempts", queryset=DeliveryAttempt.objects.order_by("number")))


@require_GET
@merchant_view(owner_only=True)
def endpoint_list(request):
    endpoints = WebhookEndpoint.objects.filter(merchant=request.merchant).order_by("created_at")
    return render(request, "merchant/webhooks.html", {"endpoints": endpoints})


def _endpoint_fields(form: WebhookEndpointForm) -> dict:
    return {name: form.cleaned_data[name] for name in EDITABLE_ENDPOINT_FIELDS}


@require_http_methods(["GET", "POST"])
@merchant_view(owner_only=True)
def endpoint_new(request):
    form = WebhookEndpointForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            endpoint = webhook_endpoint_create(merchant=request.merchant, actor=request.user, **_endpoint_fields(form))
        except ValidationError as error:
            form.add_service_error(error)
        else:
            messages.success(request, "Endpoint added. Reveal its signing secret below to verify our signatures.")
            return redirect("merchant_webhooks:detail", endpoint_id=endpoint.pk)
    return render(request, "merchant/webhooks_form.html", {"form": form})


@require_http_methods(["GET", "POST"])
@merchant_view(owner_only=True)
def endpoint_edit(request, endpoint_id: int):
    endpoint = _endpoint_or_404(request, endpoint_id)
    form = WebhookEndpointForm(
        request.POST if request.method == "POST" else None,
        initial={"url": endpoint.url, "description": endpoint.description, "event_types": endpoint.event_types},
    )
    if request.method == "POST" and form.is_valid():
        try:
            webhook_endpoint_update(endpoint=endpoint, actor=request.user, **_endpoint_fields(form))
        except ValidationError as error:
            form.add_service_error(error)
        else:
            messages.success(request, "Endpoint saved.")
            return redirect("merchant_webhooks:detail", endpoint_id=endpoint.pk)
    return render(request, "merchant/webhooks_form.html", {"form": form, "endpoint": endpoint})


def _render_detail(request, endpoint: WebhookEndpoint, *, revealed: bool = False):
    notifications = _with_attempts(Notification.objects.filter(endpoint=endpoint, merchant=request.merchant))[
        :RECENT_NOTIFICATIONS
    ]
    soon = timezone.now() + timedelta(seconds=30)
    in_flight = any(
        n.status == NotificationStatus.DELIVERING
        or (n.status == NotificationStatus.PENDING and n.next_attempt_at and n.next_attempt_at <= soon)
        for n in notifications
    )
    secrets = endpoint.signing_secrets(timezone.now())
    response = render(
        request,
        "merchant/webhooks_detail.html",
        {
            "endpoint": endpoint,
            "notifications": notifications,
            "in_flight": in_flight and not revealed,
            "masked_secret": mask_secret(endpoint.secret),
            "revealed_secrets": secrets if revealed else [],
            "previous_secret_until": endpoint.previous_secret_expires_at if len(secrets) > 1 else None,
        },
    )
    if revealed:
        add_never_cache_headers(response)  # never keep a page with a secret in any cache
    return response


@require_GET
@merchant_view(owner_only=True)
def endpoint_detail(request, endpoint_id: int):
    return _render_detail(request, _endpoint_or_404(request, endpoint_id))


@require_POST
@merchant_view(owner_only=True)
def endpoint_reveal_secret(request, endpoint_id: int):
    # A POST, so the secret is never in a URL, the history, a prefetch or a Referer.
    return _render_detail(request, _endpoint_or_404(request, endpoint_id), revealed=True)


# What each button on an endpoint's page does: the service it calls, and what the owner is told.
ENDPOINT_ACTIONS = {
    "rotate_secret": (
        lambda endpoint, user: webhook_endpoint_rotate_secret(
            endpoint=endpoint, actor=user, reason="rotated by the merchant in the portal"
        ),
        "New signing secret made. The previous one keeps signing beside it for a while: switch your receiver now.",
    ),
    "send_test": (
        lambda endpoint, user: webhook_test_send(endpoint=endpoint, actor=user),
        "Test webhook queued; its delivery shows below.",
    ),
    "disable": (
        lambda endpoint, user: webhook_endpoint_disable(
            endpoint=endpoint, actor=user, reason="disabled by the merchant in the portal", by_merchant=True
        ),
        "Endpoint disabled: nothing more is sent to it until you enable it again.",
    ),
    "enable": (
        lambda endpoint, user: webhook_endpoint_enable(
            endpoint=endpoint, actor=user, reason="enabled by the merchant in the portal"
        ),
        "Endpoint enabled. What it missed while disabled is not sent again.",
    ),
}


@require_POST
@merchant_view(owner_only=True)
def endpoint_action(request, endpoint_id: int, action: str):
    endpoint = _endpoint_or_404(request, endpoint_id)
    apply, done = ENDPOINT_ACTIONS[action]
    try:
        apply(endpoint, request.user)
    except ValidationError as error:
        messages.error(request, f"Not done: {' '.join(error.messages)}")
    else:
        messages.success(request, done)
    return redirect("merchant_webhooks:detail", endpoint_id=endpoint.pk)


# --- the portal's dashboard and payment pages -----------------------------------------------------


def webhook_attention(sender, *, merchant, membership, **kwargs) -> list[AttentionItem]:
    """Failing webhooks on the dashboard; the link only for owners, who can act on them."""
    week_ago = timezone.now() - timedelta(days=7)
    webhooks = Notification.objects.filter(merchant=merchant, channel=Channel.WEBHOOK)
    url = reverse("merchant_webhooks:list") if membership.is_owner else ""
    return [
        AttentionItem(
            "Disabled webhook endpoints", WebhookEndpoint.objects.filter(merchant=merchant, enabled=False).count(), url
        ),
        AttentionItem(
            "Webhooks that failed for good in the last 7 days",
            webhooks.filter(status=NotificationStatus.FAILED, updated_at__gte=week_ago).count(),
            url,
        ),
        AttentionItem(
            "Webhooks being retried",
            webhooks.filter(status=NotificationStatus.PENDING, attempt_count__gte=1).count(),
            url,
        ),
    ]


def payment_notifications_section(sender, *, request, merchant, payment, **kwargs):
    notifications = _with_attempts(
        Notification.objects.filter(payment=payment, merchant=merchant).order_by("created_at", "id")
    )
    return render_to_string("merchant/webhooks_payment_section.html", {"notifications": notifications}, request=request)
