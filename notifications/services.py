"""Every write of the notifications app. Notifications are created with their delivery Job
in the caller's transaction; a delivery claims its try under a row lock, sends outside any
transaction, and records the answer in a second short transaction that also schedules the
next try (a new Job with a later run_at), so one Notification keeps its webhook-id and
gets one DeliveryAttempt per try."""

import logging
import random
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from backoffice.services import audit_record, job_enqueue
from notifications.emails import notification_email
from notifications.events import EMAILED_EVENTS, EventType, event_body, new_event_id
from notifications.models import Channel, DeliveryAttempt, Notification, NotificationStatus, WebhookEndpoint
from notifications.signing import new_signing_secret, signature_headers
from notifications.transport import RESPONSE_EXCERPT_BYTES, webhook_post_rollback_unsafe, webhook_url_check
from payments.models import Merchant, Payment, PaymentEvent, Refund

logger = logging.getLogger(__name__)

DELIVER_JOB = "notifications.jobs.deliver_notification"
RETRY_JITTER = 0.2
# What the merchant reads (on the endpoint's page and in the e-mail) when our staff disabled it.
STAFF_DISABLED_REASON = "Paydesk staff disabled it"


class NotificationError(ValidationError):
    """A refused notifications operation; its message is fit to show the user."""


class DeliveryInProgress(Exception):
    """Another run is making this very try right now; the runner retries this job later."""


@dataclass(frozen=True)
class DeliveryOutcome:
    succeeded: bool
    duration_ms: int
    http_status: int | None = None
    response_excerpt: str = ""
    error: str = ""

    @property
    def endpoint_gone(self) -> bool:
        return self.http_status == 410


# --- endpoints ------------------------------------------------------------------------------


def webhook_endpoint_create(
    *, merchant: Merchant, url: str, event_types: list[str] | None = None, description: str = "", actor=None
) -> WebhookEndpoint:
    """Save a new endpoint with a fresh secret, after checking its URL (resolving the host:
    no private, loopback, link-local or metadata address) and its event types."""
    endpoint = WebhookEndpoint(merchant=merchant, url=url, event_types=list(event_types or []), description=description)
    endpoint.full_clean()
    with transaction.atomic():
        endpoint.save()
        audit_record(
            actor=actor,
            action="webhook_endpoint_create",
            target=endpoint,
            details={"url": url, "event_types": endpoint.event_types},
        )
    return endpoint


# What webhook_endpoint_update changes (keyword names of it, and the endpoint's fields).
EDITABLE_ENDPOINT_FIELDS = ("url", "event_types", "description")


def webhook_endpoint_update(
    *, endpoint: WebhookEndpoint, url: str, event_types: list[str], description: str, actor
) -> WebhookEndpoint:
    """Change an endpoint's URL, events and description after the same checks as at creation
    (the URL resolved, outside any lock), then under a row lock save and audit what changed;
    a refusal writes nothing. Pending tries go to the new URL; the secret stays."""
    wanted = {"url": url, "event_types": list(event_types), "description": description}
    candidate = WebhookEndpoint.objects.get(pk=endpoint.pk)
    for field, value in wanted.items():
        setattr(candidate, field, value)
    candidate.full_clean()  # resolves the host: a network call, so before the lock
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        changes = {
            field: [getattr(endpoint, field), value]
            for field, value in wanted.items()
            if getattr(endpoint, field) != value
        }
        if not changes:
            return endpoint
        for field, (_before, after) in changes.items():
            setattr(endpoint, field, after)
        endpoint.save(update_fields=[*changes, "updated_at"])
        audit_record(actor=actor, action="webhook_endpoint_update", target=endpoint, details={"changes": changes})
    return endpoint


def webhook_endpoint_rotate_secret(*, endpoint: WebhookEndpoint, actor, reason: str = "") -> WebhookEndpoint:
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


def webhook_endpoint_enable(*, endpoint: WebhookEndpoint, actor, reason: str = "") -> WebhookEndpoint:
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
    *, endpoint: WebhookEndpoint, actor, reason: str = "", by_merchant: bool = False
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
            who = actor.get_username() if getattr(actor, "pk", None) else "a user of yours"
            disabled_reason = f"{who} disabled it in the merchant portal"
        else:
            disabled_reason = STAFF_DISABLED_REASON
        _endpoint_disable(
            endpoint, disabled_reason=disabled_reason, audit_reason=reason, actor=actor, tell_merchant=not by_merchant
        )
    return endpoint


def _endpoint_disable(
    endpoint: WebhookEndpoint,
    *,
    disabled_reason: str,
    audit_reason: str,
    actor=None,
    gone: bool = False,
    tell_merchant: bool = True,
) -> None:
    """On a locked, enabled endpoint. `disabled_reason` is shown to the merchant."""
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


def webhook_test_send(*, endpoint: WebhookEndpoint, actor) -> Notification:
    """Queue a signed `webhook.test` to an enabled endpoint (delivered, logged and retried
    like any other webhook)."""
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.select_related("merchant").get(pk=endpoint.pk)
        if not endpoint.enabled:
            raise NotificationError("the endpoint is disabled; re-enable it first", code="endpoint_disabled")
        event_id, now = new_event_id(), timezone.now()
        body = event_body(
            event_id=event_id,
            event_type=EventType.WEBHOOK_TEST,
            created_at=now,
            data={"object": "test", "message": "A test webhook from Paydesk: the signature shows it came from us."},
        )
        notification = _notification_create(
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


# --- creating notifications -------------------------------------------------------------------


def _notification_create(*, requested_by=None, **fields) -> Notification:
    now = timezone.now()
    notification = Notification.objects.create(
        status=NotificationStatus.PENDING,
        next_attempt_at=now,
        requested_by=requested_by if getattr(requested_by, "pk", None) else None,
        **fields,
    )
    _enqueue_try(notification, attempt_number=1, run_at=now, requested_by=requested_by)
    return notification


def _enqueue_try(notification: Notification, *, attempt_number: int, run_at, requested_by=None):
    return job_enqueue(
        func=DELIVER_JOB,
        kwargs={"notification_id": notification.pk, "attempt_number": attempt_number},
        queue="notifications",
        concerns=notification,
        requested_by=requested_by,
        run_at=run_at,
    )


def notifications_create_for_event(
    *,
    merchant: Merchant,
    event_type: str,
    data: dict,
    payment: Payment | None = None,
    payment_event: PaymentEvent | None = None,
    refund: Refund | None = None,
) -> list[Notification]:
    """In the caller's transaction: one Notification (and its delivery Job) per enabled
    endpoint of the merchant that wants this event, plus an e-mail to the merchant's contact
    address for the events worth a mail. All share one event id."""
    event_id, now = new_event_id(), timezone.now()
    body = event_body(event_id=event_id, event_type=event_type, created_at=now, data=data)
    common = {
        "event_id": event_id,
        "event_type": event_type,
        "merchant": merchant,
        "body": body,
        "payment": payment,
        "payment_event": payment_event,
        "refund": refund,
    }
    created = [
        _notification_create(channel=Channel.WEBHOOK, endpoint=endpoint, destination=endpoint.url, **common)
        for endpoint in WebhookEndpoint.objects.filter(merchant=merchant, enabled=True).order_by("pk")
        if endpoint.wants(event_type)
    ]
    if event_type in EMAILED_EVENTS and merchant.contact_email:
        created.append(_notification_create(channel=Channel.EMAIL, destination=merchant.contact_email, **common))
    return created


def notification_resend(*, notification: Notification, actor, reason: str = "") -> Notification:
    """Queue a new delivery of a finished notification: a new Notification with the same
    event id (so the receiver can tell it is the same event), payload and destination."""
    with transaction.atomic():
        original = Notification.objects.select_related("endpoint", "merchant").get(pk=notification.pk)
        if not original.is_finished():
            raise NotificationError(
                f"still being delivered (it is {original.get_status_display().lower()})", code="not_finished"
            )
        destination = original.destination
        if original.channel == Channel.WEBHOOK:
            endpoint = WebhookEndpoint.objects.get(pk=original.endpoint_id)
            if not endpoint.enabled:
                raise NotificationError("its endpoint is disabled; re-enable it first", code="endpoint_disabled")
            destination = endpoint.url
        resend = _notification_create(
            event_id=original.event_id,
            event_type=original.event_type,
            merchant=original.merchant,
            payment_id=original.payment_id,
            payment_event_id=original.payment_event_id,
            refund_id=original.refund_id,
            body=original.body,
            channel=original.channel,
            endpoint_id=original.endpoint_id,
            destination=destination,
            resend_of=original,
            requested_by=actor,
        )
        audit_record(
            actor=actor,
            action="notification_resend",
            target=original,
            reason=reason,
            details={"event_id": original.event_id, "resend_id": resend.pk},
        )
    return resend


# --- delivering (called by the job) -------------------------------------------------------------


def _stale_after() -> timedelta:
    # Longer than any live try can take (connect + read timeouts and the excerpt), shorter
    # than the sweeper's wait before it re-runs the job of a dead worker.
    return timedelta(seconds=2 * settings.WEBHOOKS_TIMEOUT_SECONDS + 15)


def notification_delivery_start(*, notification_id: int, attempt_number: int) -> DeliveryAttempt | None:
    """Lock the notification and claim try `attempt_number`: mark it `delivering` and write its
    DeliveryAttempt. None when there is nothing to send: it is delivered or otherwise finished,
    or this try was already made (a duplicate or superseded job). A try left open by a worker
    that died is closed as failed and the next one scheduled; it is not re-sent here."""
    with transaction.atomic():
        notification = Notification.objects.select_for_update().get(pk=notification_id)
        if notification.is_finished():
            return None
        now = timezone.now()
        if notification.status == NotificationStatus.DELIVERING:
            if notification.attempt_count != attempt_number:
                return None
            open_attempt = notification.attempts.get(number=attempt_number)
            if open_attempt.started_at > now - _stale_after():
                raise DeliveryInProgress(f"notification {notification.pk} try {attempt_number} is in flight")
            _attempt_close(
                open_attempt,
                DeliveryOutcome(
                    succeeded=False,
                    duration_ms=int((now - open_attempt.started_at).total_seconds() * 1000),
                    error="interrupted: the worker stopped during this try (the receiver may have got it)",
                ),
            )
            _after_failed_try(notification, open_attempt)
            return None
        if notification.attempt_count != attempt_number - 1:
            return None
        destination = notification.destination
        if notification.channel == Channel.WEBHOOK:
            endpoint = WebhookEndpoint.objects.get(pk=notification.endpoint_id)
            if not endpoint.enabled:
                notification.status, notification.next_attempt_at = NotificationStatus.DISABLED, None
                notification.save(update_fields=["status", "next_attempt_at", "updated_at"])
                return None
            destination = endpoint.url
        notification.status = NotificationStatus.DELIVERING
        notification.attempt_count = attempt_number
        notification.next_attempt_at = None
        notification.save(update_fields=["status", "attempt_count", "next_attempt_at", "updated_at"])
        return DeliveryAttempt.objects.create(
            notification=notification, number=attempt_number, destination=destination, started_at=now
        )


def notification_send_rollback_unsafe(*, attempt: DeliveryAttempt) -> DeliveryOutcome:
    """Send one claimed try: sign and POST the webhook, or send the e-mail. A network call:
    never inside a transaction or a lock. Never raises; failures come back in the outcome."""
    notification = attempt.notification
    started = timezone.now()
    try:
        if notification.channel == Channel.WEBHOOK:
            endpoint = WebhookEndpoint.objects.get(pk=notification.endpoint_id)
            headers = signature_headers(
                message_id=notification.event_id,
                body=notification.body,
                signing_secrets=endpoint.signing_secrets(started),
                at=started,
            )
            response = webhook_post_rollback_unsafe(
                url=attempt.destination, body=notification.body.encode("utf-8"), headers=headers
            )
            return DeliveryOutcome(
                succeeded=response.succeeded,
                duration_ms=response.duration_ms,
                http_status=response.http_status,
                response_excerpt=response.response_excerpt,
                error=response.error,
            )
        notification_email(notification).send(fail_silently=False)
    except Exception as error:  # an unexpected fault is one failed try, logged, retried on schedule
        logger.exception("notification %s try %s could not be sent", notification.pk, attempt.number)
        return DeliveryOutcome(
            succeeded=False, duration_ms=_ms_since(started), error=f"{type(error).__name__}: {error}"[:2000]
        )
    return DeliveryOutcome(succeeded=True, duration_ms=_ms_since(started))


def _ms_since(moment) -> int:
    return int((timezone.now() - moment).total_seconds() * 1000)


def _attempt_close(attempt: DeliveryAttempt, outcome: DeliveryOutcome) -> None:
    attempt.finished_at = timezone.now()
    attempt.duration_ms = max(0, outcome.duration_ms)
    attempt.http_status = outcome.http_status
    attempt.succeeded = outcome.succeeded
    attempt.response_excerpt = outcome.response_excerpt[:RESPONSE_EXCERPT_BYTES]
    attempt.error = outcome.error[:2000]
    attempt.save()


def retry_delay_seconds(attempt_number: int) -> float | None:
    """Wait after failed try `attempt_number` (with jitter), or None when it was the last."""
    schedule = settings.WEBHOOKS_RETRY_SCHEDULE_SECONDS
    if attempt_number > len(schedule):
        return None
    return schedule[attempt_number - 1] * random.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER)


def _after_failed_try(notification: Notification, attempt: DeliveryAttempt) -> None:
    """On a locked notification: schedule the next try as a new Job, or give up."""
    notification.last_error = attempt.error or f"HTTP {attempt.http_status}"
    delay = retry_delay_seconds(attempt.number)
    if delay is None:
        notification.status, notification.next_attempt_at = NotificationStatus.FAILED, None
    else:
        notification.status = NotificationStatus.PENDING
        notification.next_attempt_at = timezone.now() + timedelta(seconds=delay)
        _enqueue_try(notification, attempt_number=attempt.number + 1, run_at=notification.next_attempt_at)
    notification.save(update_fields=["status", "next_attempt_at", "last_error", "updated_at"])


def notification_delivery_finish(*, attempt_id: int, outcome: DeliveryOutcome) -> Notification:
    """Record a try's outcome and move the notification: delivered; or, on 410 Gone, the
    endpoint disabled and the merchant e-mailed; or the next try scheduled; or failed after
    the last. A try that is no longer the open one (a duplicate run) changes nothing."""
    with transaction.atomic():
        attempt = DeliveryAttempt.objects.get(pk=attempt_id)
        notification = Notification.objects.select_for_update().get(pk=attempt.notification_id)
        attempt.refresh_from_db()
        if (
            notification.status != NotificationStatus.DELIVERING
            or notification.attempt_count != attempt.number
            or attempt.succeeded is not None
        ):
            return notification
        _attempt_close(attempt, outcome)
        if outcome.succeeded:
            notification.status = NotificationStatus.DELIVERED
            notification.delivered_at, notification.last_error = timezone.now(), ""
            notification.save(update_fields=["status", "delivered_at", "last_error", "updated_at"])
        elif notification.channel == Channel.WEBHOOK and outcome.endpoint_gone:
            endpoint = (
                WebhookEndpoint.objects.select_for_update().select_related("merchant").get(pk=notification.endpoint_id)
            )
            notification.status, notification.last_error = NotificationStatus.DISABLED, outcome.error
            notification.save(update_fields=["status", "last_error", "updated_at"])
            if endpoint.enabled:
                gone = f"it answered 410 Gone to {notification.event_id}"
                _endpoint_disable(endpoint, disabled_reason=gone, audit_reason=gone, gone=True)
        else:
            _after_failed_try(notification, attempt)
        logger.info(
            "notification %s (%s) try %s: %s",
            notification.pk,
            notification.event_id,
            attempt.number,
            notification.status,
        )
    return notification
