"""Job bodies: take ids, call services, return a small result. Idempotent: a delivered
notification is never sent again, and a try already made is never made twice."""

import structlog

from backoffice.metrics import metrics_record
from notifications.delivery import (
    notification_delivery_finish,
    notification_delivery_start,
    notification_send_rollback_unsafe,
)


def deliver_notification(notification_id: int, attempt_number: int) -> dict:
    """Make try `attempt_number` of a notification (the network call outside any lock) and
    record it; the next try, if any, is a new job."""
    attempt = notification_delivery_start(notification_id=notification_id, attempt_number=attempt_number)
    if attempt is None:
        return {"skipped": "nothing to deliver"}
    structlog.contextvars.bind_contextvars(notification=attempt.notification.event_id)
    outcome = notification_send_rollback_unsafe(attempt=attempt)
    notification = notification_delivery_finish(attempt_id=attempt.pk, outcome=outcome)
    result = "succeeded" if outcome.succeeded else "gone" if outcome.http_status == 410 else "failed"
    metrics_record(counters=[("webhook_deliveries", {"channel": notification.channel, "outcome": result})])
    return {"status": notification.status, "try": attempt.number, "http_status": outcome.http_status}
