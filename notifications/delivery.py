"""Notifications and their delivery. Notifications are created with their delivery Job
in the caller's transaction; a delivery claims its try under a row lock, sends outside any
transaction, and records the answer in a second short transaction that also schedules the
next try (a new Job with a later run_at), so one Notification keeps its webhook-id and
gets one DeliveryAttempt per try."""

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from backoffice.actors import Actor, actor_user
from backoffice.backoff import backoff_delay_seconds
from backoffice.models import Job
from backoffice.services import audit_record, job_enqueue
from ledger.models import Payout
from notifications.emails import notification_email
from notifications.errors import NotificationError
from notifications.events import EMAILED_EVENTS, event_body, new_event_id
from notifications.models import Channel, DeliveryAttempt, Notification, NotificationStatus, WebhookEndpoint
from notifications.signing import signature_headers
from notifications.transport import RESPONSE_EXCERPT_BYTES, DeliveryOutcome, webhook_post_rollback_unsafe
from payments.models import Merchant, Payment, PaymentEvent, Refund

logger = logging.getLogger(__name__)

DELIVER_JOB = "notifications.jobs.deliver_notification"


class DeliveryInProgress(Exception):
    """Another run is making this very try right now; the runner retries this job later."""


def _endpoint_of(notification: Notification, endpoints: QuerySet[WebhookEndpoint]) -> WebhookEndpoint:
    """A webhook notification's endpoint, read afresh from `endpoints` (its URL and enabled flag change)."""
    if notification.endpoint_id is None:  # as .get(pk=None) would: e-mails have no endpoint
        raise WebhookEndpoint.DoesNotExist("an e-mail notification has no endpoint")
    return endpoints.get(pk=notification.endpoint_id)


# --- creating notifications -------------------------------------------------------------------


def notification_create(*, requested_by: Actor = None, **fields: object) -> Notification:
    """In the caller's transaction: a pending notification and the Job of its first try."""
    now = timezone.now()
    notification = Notification.objects.create(
        status=NotificationStatus.PENDING,
        next_attempt_at=now,
        requested_by=actor_user(requested_by),
        **fields,
    )
    _enqueue_try(notification, attempt_number=1, run_at=now, requested_by=requested_by)
    return notification


def _enqueue_try(
    notification: Notification, *, attempt_number: int, run_at: datetime, requested_by: Actor = None
) -> Job:
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
    payout: Payout | None = None,
) -> list[Notification]:
    """In the caller's transaction: one Notification (and its delivery Job) per enabled
    endpoint of the merchant that wants this event, plus an e-mail to the merchant's contact
    address for the events worth a mail. All share one event id."""
    event_id, now = new_event_id(), timezone.now()
    body = event_body(event_id=event_id, event_type=event_type, created_at=now, data=data)
    common: dict[str, Any] = {
        "event_id": event_id,
        "event_type": event_type,
        "merchant": merchant,
        "body": body,
        "payment": payment,
        "payment_event": payment_event,
        "refund": refund,
        "payout": payout,
    }
    created = [
        notification_create(channel=Channel.WEBHOOK, endpoint=endpoint, destination=endpoint.url, **common)
        for endpoint in WebhookEndpoint.objects.filter(merchant=merchant, enabled=True).order_by("pk")
        if endpoint.wants(event_type)
    ]
    if event_type in EMAILED_EVENTS and merchant.contact_email:
        created.append(notification_create(channel=Channel.EMAIL, destination=merchant.contact_email, **common))
    return created


def notification_resend(*, notification: Notification, actor: Actor, reason: str = "") -> Notification:
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
            endpoint = _endpoint_of(original, WebhookEndpoint.objects.all())
            if not endpoint.enabled:
                raise NotificationError("its endpoint is disabled; re-enable it first", code="endpoint_disabled")
            destination = endpoint.url
        resend = notification_create(
            event_id=original.event_id,
            event_type=original.event_type,
            merchant=original.merchant,
            payment_id=original.payment_id,
            payment_event_id=original.payment_event_id,
            refund_id=original.refund_id,
            payout_id=original.payout_id,
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
    # Longer than any live try can take, no longer than the sweeper's wait before it re-runs
    # the job of a dead worker: both checked together at start-up (settings).
    return timedelta(seconds=settings.WEBHOOKS_TRY_IN_FLIGHT_SECONDS)


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
            endpoint = _endpoint_of(notification, WebhookEndpoint.objects.all())
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
            endpoint = _endpoint_of(notification, WebhookEndpoint.objects.all())
            headers = signature_headers(
                message_id=notification.event_id,
                body=notification.body,
                signing_secrets=endpoint.signing_secrets(started),
                at=started,
            )
            return webhook_post_rollback_unsafe(
                url=attempt.destination, body=notification.body.encode("utf-8"), headers=headers
            )
        notification_email(notification).send(fail_silently=False)
    except Exception as error:  # an unexpected fault is one failed try, logged, retried on schedule
        logger.exception("notification %s try %s could not be sent", notification.pk, attempt.number)
        return DeliveryOutcome(
            succeeded=False, duration_ms=_ms_since(started), error=f"{type(error).__name__}: {error}"[:2000]
        )
    return DeliveryOutcome(succeeded=True, duration_ms=_ms_since(started))


def _ms_since(moment: datetime) -> int:
    return int((timezone.now() - moment).total_seconds() * 1000)


def _attempt_close(attempt: DeliveryAttempt, outcome: DeliveryOutcome) -> None:
    attempt.finished_at = timezone.now()
    attempt.duration_ms = max(0, outcome.duration_ms)
    attempt.http_status = outcome.http_status
    attempt.succeeded = outcome.succeeded
    attempt.response_excerpt = outcome.response_excerpt[:RESPONSE_EXCERPT_BYTES]
    attempt.error = outcome.error[:2000]
    attempt.save()


def _after_failed_try(notification: Notification, attempt: DeliveryAttempt) -> None:
    """On a locked notification: schedule the next try as a new Job, or give up."""
    notification.last_error = attempt.error or f"HTTP {attempt.http_status}"
    delay = backoff_delay_seconds(settings.WEBHOOKS_RETRY_SCHEDULE_SECONDS, attempt.number, repeat_last=False)
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
            endpoint = _endpoint_of(
                notification, WebhookEndpoint.objects.select_for_update().select_related("merchant")
            )
            notification.status, notification.last_error = NotificationStatus.DISABLED, outcome.error
            notification.save(update_fields=["status", "last_error", "updated_at"])
            if endpoint.enabled:
                gone = f"it answered 410 Gone to {notification.event_id}"
                # endpoints imports this module (a disabled endpoint is announced by a notification).
                from notifications.endpoints import webhook_endpoint_disable_locked

                webhook_endpoint_disable_locked(endpoint, disabled_reason=gone, audit_reason=gone, gone=True)
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
