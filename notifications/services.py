"""Kept while branches move over: the notifications services now live in
notifications.endpoints and notifications.delivery. Import from there."""

from notifications.delivery import (
    DELIVER_JOB,
    DeliveryInProgress,
    DeliveryOutcome,
    notification_delivery_finish,
    notification_delivery_start,
    notification_resend,
    notification_send_rollback_unsafe,
    notifications_create_for_event,
)
from notifications.endpoints import (
    EDITABLE_ENDPOINT_FIELDS,
    STAFF_DISABLED_REASON,
    webhook_endpoint_create,
    webhook_endpoint_disable,
    webhook_endpoint_enable,
    webhook_endpoint_rotate_secret,
    webhook_endpoint_update,
    webhook_test_send,
)
from notifications.errors import NotificationError

__all__ = [
    "DELIVER_JOB",
    "EDITABLE_ENDPOINT_FIELDS",
    "STAFF_DISABLED_REASON",
    "DeliveryInProgress",
    "DeliveryOutcome",
    "NotificationError",
    "notification_delivery_finish",
    "notification_delivery_start",
    "notification_resend",
    "notification_send_rollback_unsafe",
    "notifications_create_for_event",
    "webhook_endpoint_create",
    "webhook_endpoint_disable",
    "webhook_endpoint_enable",
    "webhook_endpoint_rotate_secret",
    "webhook_endpoint_update",
    "webhook_test_send",
]
