"""Notifications' retention policy (backoffice.retention): delivered notifications and their
delivery attempts go RETENTION_DELIVERED_NOTIFICATIONS_DAYS after they were created. Failed,
pending and disabled ones stay (a person may resend them), and so does an original that a
resend points at."""

from django.db.models import QuerySet

from backoffice.retention import RetentionPolicy, register_retention
from notifications.models import DeliveryAttempt, Notification, NotificationStatus


def delivered_notifications_before(cutoff) -> QuerySet:
    return (
        Notification.objects.filter(status=NotificationStatus.DELIVERED, created_at__lt=cutoff)
        .exclude(pk__in=Notification.objects.filter(resend_of__isnull=False).values("resend_of_id"))
        .order_by("created_at")
        .values_list("pk", flat=True)
    )


def notifications_delete(pks: list) -> int:
    """The notifications and, first, their delivery attempts (which protect them)."""
    attempts = DeliveryAttempt.objects.filter(notification_id__in=pks).delete()[0]
    return attempts + Notification.objects.filter(pk__in=pks).delete()[0]


def register() -> None:
    register_retention(
        RetentionPolicy(
            name="notifications.delivered",
            what="delivered notifications and their delivery attempts, RETENTION_DELIVERED_NOTIFICATIONS_DAYS "
            "after they were created",
            horizon_setting="RETENTION_DELIVERED_NOTIFICATIONS_DAYS",
            candidates=delivered_notifications_before,
            delete=notifications_delete,
        )
    )
