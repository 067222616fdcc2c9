"""Webhook endpoints: create, edit, rotate the secret, enable, disable (by staff, by the
merchant, or on `410 Gone`), and send a test. URLs are checked (resolved) before any lock;
each write is audited."""

from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from backoffice.actors import Actor, actor_user
from backoffice.services import audit_record
from notifications.delivery import notification_create, notifications_create_for_event
from notifications.errors import NotificationError
from notifications.events import EventType, event_body, new_event_id
from notifications.models import (
    Channel,
    EndpointChangeStatus,
    Notification,
    NotificationStatus,
    WebhookEndpoint,
    WebhookEndpointChange,
)
from notifications.signing import new_signing_secret
from notifications.transport import webhook_url_check
from payments.models import Merchant

# What the merchant reads (on the endpoint's page and in the e-mail) when our staff disabled it.
STAFF_DISABLED_REASON = "Paydesk staff disabled it"


def webhook_endpoint_create(
    *, merchant: Merchant, url: str, event_types: list[str] | None = None, description: str = "", actor: Actor = None
) -> WebhookEndpoint:
    """Save a new endpoint with a fresh secret, after checking its URL (resolving the host:
    no private, loopback, link-local or metadata address) and its event types."""
    endpoint = WebhookEndpoint(merchant=merchant, url=url, event_types=list(event_types or []), description=description)
    endpoint.full_clean()
    with transaction.atomic():
        return _endpoint_insert_checked(endpoint, actor=actor)


def _endpoint_insert_checked(endpoint: WebhookEndpoint, *, actor: Actor, reason: str = "") -> WebhookEndpoint:
    """In the caller's transaction: insert an endpoint whose fields were checked, within the
    merchant's limit, and audit it."""
    merchant = endpoint.merchant
    # The merchant's row lock makes the count and the insert one step for concurrent adds.
    Merchant.objects.select_for_update().filter(pk=merchant.pk).first()
    limit = settings.WEBHOOKS_MAX_ENDPOINTS_PER_MERCHANT
    if WebhookEndpoint.objects.filter(merchant=merchant).count() >= limit:
        raise NotificationError(
            f"a merchant has at most {limit} webhook endpoints; delete or reuse one", code="too_many_endpoints"
        )
    endpoint.save()
    audit_record(
        actor=actor,
        action="webhook_endpoint_create",
        target=endpoint,
        reason=reason,
        details={"url": endpoint.url, "event_types": endpoint.event_types},
    )
    return endpoint


# What webhook_endpoint_update changes (keyword names of it, and the endpoint's fields).
EDITABLE_ENDPOINT_FIELDS = ("url", "event_types", "description")


def webhook_endpoint_update(
    *, endpoint: WebhookEndpoint, url: str, event_types: list[str], description: str, actor: Actor
) -> WebhookEndpoint:
    """Change an endpoint's URL, events and description after the same checks as at creation
    (the URL resolved, outside any lock), then under a row lock save and audit what changed;
    a refusal writes nothing. Pending tries go to the new URL; the secret stays."""
    wanted = {"url": url, "event_types": list(event_types), "description": description}
    _endpoint_candidate(endpoint, wanted).full_clean()  # resolves the host: a network call, so before the lock
    with transaction.atomic():
        return _endpoint_update_checked(endpoint, wanted, actor=actor)


def _endpoint_candidate(endpoint: WebhookEndpoint, wanted: dict) -> WebhookEndpoint:
    candidate = WebhookEndpoint.objects.get(pk=endpoint.pk)
    for field, value in wanted.items():
        setattr(candidate, field, value)
    return candidate


def _endpoint_update_checked(
    endpoint: WebhookEndpoint, wanted: dict, *, actor: Actor, reason: str = ""
) -> WebhookEndpoint:
    """In the caller's transaction: lock the endpoint, save the checked values that differ and
    audit them."""
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    changes = {
        field: [getattr(endpoint, field), value] for field, value in wanted.items() if getattr(endpoint, field) != value
    }
    if not changes:
        return endpoint
    for field, (_before, after) in changes.items():
        setattr(endpoint, field, after)
    endpoint.save(update_fields=[*changes, "updated_at"])
    audit_record(
        actor=actor, action="webhook_endpoint_update", target=endpoint, reason=reason, details={"changes": changes}
    )
    return endpoint


# --- four eyes on where a merchant's webhooks go (staff changes) ---------------------------------


def webhook_endpoint_change_request(
    *,
    merchant: Merchant,
    url: str,
    event_types: list[str],
    description: str,
    requested_by: Actor,
    endpoint: WebhookEndpoint | None = None,
) -> WebhookEndpointChange:
    """A staff member asks for a new endpoint, or a new URL (with its events and description)
    for `endpoint`: checked now as a change would be, applied only when a second staff member
    approves (webhook_endpoint_change_approve). Nothing about the endpoint changes before."""
    requester = actor_user(requested_by)
    if requester is None:
        raise NotificationError("A webhook URL change is asked by a staff member.", code="permission_denied")
    wanted = {"url": url, "event_types": list(event_types), "description": description}
    if endpoint is None:
        WebhookEndpoint(merchant=merchant, **wanted).full_clean()
    else:
        merchant = endpoint.merchant
        _endpoint_candidate(endpoint, wanted).full_clean()
    with transaction.atomic():
        if endpoint is not None:
            endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
            if endpoint.changes.filter(status=EndpointChangeStatus.REQUESTED).exists():
                raise NotificationError(
                    "a change of this endpoint already awaits approval; approve or reject it first",
                    code="change_pending",
                )
        change = WebhookEndpointChange.objects.create(
            merchant=merchant, endpoint=endpoint, requested_by=requester, **wanted
        )
        audit_record(
            actor=requested_by,
            action="webhook_endpoint_change_request",
            target=endpoint or merchant,
            details={"change": change.pk, "url": url, "was": endpoint.url if endpoint else None},
        )
    return change


def _change_decider(decider: Actor, what: str) -> User:
    """The deciding user, refused unless active staff with approve_webhookendpointchange."""
    user = actor_user(decider)
    if user is None or not user.is_active or not user.has_perm("notifications.approve_webhookendpointchange"):
        raise NotificationError(f"You may not {what}.", code="permission_denied")
    return user


def _change_lock_for_second_person(change: WebhookEndpointChange, *, decider: User) -> WebhookEndpointChange:
    """Lock the change and check it is open and not the decider's own (four eyes)."""
    change = WebhookEndpointChange.objects.select_for_update().select_related("merchant").get(pk=change.pk)
    if change.requested_by_id == decider.pk:
        raise NotificationError("A webhook URL change needs a second person: you asked for this one.", code="four_eyes")
    if change.status != EndpointChangeStatus.REQUESTED:
        raise NotificationError(f"not awaiting approval (it is {change.get_status_display()})", code="wrong_status")
    return change


def webhook_endpoint_change_approve(
    *, change: WebhookEndpointChange, approver: Actor, note: str = ""
) -> WebhookEndpointChange:
    """A second staff member approves: the URL is checked again (outside any lock), then the
    endpoint is created or changed, the change marked approved and both audited."""
    user = _change_decider(approver, "approve webhook URL changes")
    wanted = {"url": change.url, "event_types": list(change.event_types), "description": change.description}
    current = change.endpoint
    if current is None:
        WebhookEndpoint(merchant=change.merchant, **wanted).full_clean()
    else:
        _endpoint_candidate(current, wanted).full_clean()
    with transaction.atomic():
        change = _change_lock_for_second_person(change, decider=user)
        reason = f"URL change asked by {change.requested_by}, approved by {user}"
        current = change.endpoint
        if current is None:
            endpoint = WebhookEndpoint(merchant=change.merchant, **wanted)
            change.endpoint = _endpoint_insert_checked(endpoint, actor=user, reason=reason)
        else:
            _endpoint_update_checked(current, wanted, actor=user, reason=reason)
        change.status, change.decided_by = EndpointChangeStatus.APPROVED, user
        change.decided_at, change.decision_note = timezone.now(), note.strip()
        change.save()
        audit_record(
            actor=approver,
            action="webhook_endpoint_change_approve",
            target=change.endpoint,
            reason=note.strip(),
            details={"change": change.pk, "url": change.url},
        )
    return change


def webhook_endpoint_change_reject(
    *, change: WebhookEndpointChange, approver: Actor, note: str
) -> WebhookEndpointChange:
    """A second staff member rejects, with a required note; the endpoint stays as it is."""
    note = (note or "").strip()
    if not note:
        raise NotificationError({"note": ["Say why the change is rejected."]}, code="reason_required")
    user = _change_decider(approver, "reject webhook URL changes")
    with transaction.atomic():
        change = _change_lock_for_second_person(change, decider=user)
        change.status, change.decided_by = EndpointChangeStatus.REJECTED, user
        change.decided_at, change.decision_note = timezone.now(), note
        change.save()
        audit_record(
            actor=approver,
            action="webhook_endpoint_change_reject",
            target=change.endpoint or change.merchant,
            reason=note,
            details={"change": change.pk, "url": change.url},
        )
    return change


def webhook_endpoint_rotate_secret(*, endpoint: WebhookEndpoint, actor: Actor, reason: str = "") -> WebhookEndpoint:
    """Give the endpoint a new secret; the previous one keeps signing beside it for the
    configured overlap, so the merchant can switch without losing a webhook."""
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        now = timezone.now()
        overlap_ends = endpoint.previous_secret_expires_at
        if endpoint.previous_secret and overlap_ends and overlap_ends > now:
            # A second rotation now would drop the oldest secret at once, breaking the promised overlap.
            raise NotificationError(
                f"a rotation is still in its overlap until {overlap_ends:%Y-%m-%d %H:%M %Z}; rotate again after that",
                code="rotation_in_progress",
            )
        endpoint.previous_secret = endpoint.secret
        endpoint.previous_secret_expires_at = now + timedelta(seconds=settings.WEBHOOKS_SECRET_ROTATION_OVERLAP_SECONDS)
        endpoint.secret = new_signing_secret()
        endpoint.secret_rotated_at = now
        endpoint.save(
            update_fields=[
                "previous_secret",
                "previous_secret_expires_at",
                "secret",
                "secret_rotated_at",
                "updated_at",
            ]
        )
        audit_record(
            actor=actor,
            action="webhook_secret_rotate",
            target=endpoint,
            reason=reason,
            details={"previous_secret_valid_until": endpoint.previous_secret_expires_at.isoformat()},
        )
    return endpoint


def webhook_endpoint_enable(*, endpoint: WebhookEndpoint, actor: Actor, reason: str = "") -> WebhookEndpoint:
    """Re-enable a disabled endpoint after checking its URL again; what it missed meanwhile
    stays `disabled` until someone resends it."""
    webhook_url_check(endpoint.url)
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        if endpoint.enabled:
            raise NotificationError("already enabled", code="already_enabled")
        was_disabled_because = endpoint.disabled_reason
        endpoint.enabled, endpoint.disabled_reason, endpoint.disabled_at = True, "", None
        endpoint.save(update_fields=["enabled", "disabled_reason", "disabled_at", "updated_at"])
        audit_record(
            actor=actor,
            action="webhook_endpoint_enable",
            target=endpoint,
            reason=reason,
            details={"was_disabled_because": was_disabled_because},
        )
    return endpoint


def webhook_endpoint_disable(
    *, endpoint: WebhookEndpoint, actor: Actor, reason: str = "", by_merchant: bool = False
) -> WebhookEndpoint:
    """Disable an endpoint by hand, in one transaction under a row lock: its pending
    notifications stop (status `disabled`) and the disable is audited. Disabled by staff: the
    merchant is e-mailed that our staff disabled it (the staff's reason stays in the audit
    trail). Disabled by the merchant in the portal (`by_merchant`): the reason names the user
    and no e-mail goes out, as the merchant did it and sees it on the page."""
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().select_related("merchant").get(pk=endpoint.pk)
        if not endpoint.enabled:
            raise NotificationError("already disabled", code="already_disabled")
        if by_merchant:
            who = user.get_username() if (user := actor_user(actor)) else "a user of yours"
            disabled_reason = f"{who} disabled it in the merchant portal"
        else:
            disabled_reason = STAFF_DISABLED_REASON
        webhook_endpoint_disable_locked(
            endpoint, disabled_reason=disabled_reason, audit_reason=reason, actor=actor, tell_merchant=not by_merchant
        )
    return endpoint


def webhook_endpoint_disable_locked(
    endpoint: WebhookEndpoint,
    *,
    disabled_reason: str,
    audit_reason: str,
    actor: Actor = None,
    gone: bool = False,
    tell_merchant: bool = True,
) -> None:
    """On a locked, enabled endpoint: disable it, stop its pending notifications, audit, and
    (unless told not to) tell the merchant. `disabled_reason` is shown to the merchant."""
    now = timezone.now()
    endpoint.enabled, endpoint.disabled_reason, endpoint.disabled_at = False, disabled_reason[:255], now
    endpoint.save(update_fields=["enabled", "disabled_reason", "disabled_at", "updated_at"])
    stopped = Notification.objects.filter(endpoint=endpoint, status=NotificationStatus.PENDING).update(
        status=NotificationStatus.DISABLED,
        next_attempt_at=None,
        last_error=f"endpoint disabled: {disabled_reason}"[:2000],
        updated_at=now,
    )
    audit_record(
        actor=actor,
        action="webhook_endpoint_disable",
        target=endpoint,
        reason=audit_reason,
        details={
            "disabled_reason": disabled_reason,
            "pending_notifications_stopped": stopped,
            "merchant_told": tell_merchant,
        },
    )
    if not tell_merchant:
        return
    notifications_create_for_event(
        merchant=endpoint.merchant,
        event_type=EventType.WEBHOOK_ENDPOINT_DISABLED,
        data={
            "object": "webhook_endpoint",
            "url": endpoint.url,
            "reason": disabled_reason,
            "disabled_at": now.isoformat().replace("+00:00", "Z"),
            "pending_notifications_stopped": stopped,
            "gone": gone,
        },
    )


def webhook_test_send(*, endpoint: WebhookEndpoint, actor: Actor) -> Notification:
    """Queue a signed `webhook.test` to an enabled endpoint (delivered, logged and retried
    like any other webhook), at most WEBHOOKS_TEST_SENDS_PER_HOUR per endpoint (row lock)."""
    with transaction.atomic():
        locked = WebhookEndpoint.objects.select_for_update(of=("self",)).select_related("merchant")
        endpoint = locked.get(pk=endpoint.pk)
        if not endpoint.enabled:
            raise NotificationError("the endpoint is disabled; re-enable it first", code="endpoint_disabled")
        limit = settings.WEBHOOKS_TEST_SENDS_PER_HOUR
        recent = Notification.objects.filter(
            endpoint=endpoint, event_type=EventType.WEBHOOK_TEST, created_at__gte=timezone.now() - timedelta(hours=1)
        )
        if recent.count() >= limit:
            raise NotificationError(
                f"at most {limit} test webhooks an hour per endpoint; try again later", code="too_many_test_sends"
            )
        event_id, now = new_event_id(), timezone.now()
        body = event_body(
            event_id=event_id,
            event_type=EventType.WEBHOOK_TEST,
            created_at=now,
            data={"object": "test", "message": "A test webhook from Paydesk: the signature shows it came from us."},
        )
        notification = notification_create(
            event_id=event_id,
            event_type=EventType.WEBHOOK_TEST,
            merchant=endpoint.merchant,
            body=body,
            channel=Channel.WEBHOOK,
            endpoint=endpoint,
            destination=endpoint.url,
            requested_by=actor,
        )
        audit_record(actor=actor, action="webhook_test_send", target=endpoint, details={"event_id": event_id})
    return notification
