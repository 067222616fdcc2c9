"""Daily payment figures for the dashboard and charts, pre-aggregated into backoffice.Figure.

Per day (in the project's time zone) and currency: payments created, captured, failed,
captured volume, refunds sent and refunded volume; per day and decline code: failed payments.
`payment_figures_refresh` recomputes whole days from the source tables (an index range on
created_at), so a page view reads a few hundred small rows whatever the volume.
"""

from datetime import date, datetime, time, timedelta

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from backoffice.figures import day_start, figures_replace
from payments.models import Payment, Refund
from payments.states import CAPTURED, PaymentStatus, RefundStatus

PAYMENT_SERIES = (
    "payments_created",
    "payments_captured",
    "payments_failed",
    "payments_captured_minor",
    "refunds_succeeded",
    "refunds_succeeded_minor",
    "payments_declined",
)


def payment_figures_refresh(*, days: int = 2) -> int:
    """Recompute the figures of the last `days` days (today included); returns rows written."""
    today = day_start()
    buckets = [today - timedelta(days=back) for back in range(days)]
    since = buckets[-1]
    tz = timezone.get_current_timezone()

    def day(value: date) -> datetime:
        return datetime.combine(value, time.min, tzinfo=tz)

    rows = []
    payments = (
        Payment.objects.filter(created_at__gte=since)
        .annotate(day=TruncDate("created_at", tzinfo=tz))
        .values("day", "currency")
        .annotate(
            created=Count("pk"),
            captured=Count("pk", filter=Q(status__in=CAPTURED)),
            failed=Count("pk", filter=Q(status=PaymentStatus.FAILED)),
            captured_minor=Sum("amount_minor", filter=Q(status__in=CAPTURED)),
        )
        .order_by()
    )
    for row in payments:
        bucket = day(row["day"])
        rows += [
            ("payments_created", bucket, row["currency"], row["created"]),
            ("payments_captured", bucket, row["currency"], row["captured"]),
            ("payments_failed", bucket, row["currency"], row["failed"]),
            ("payments_captured_minor", bucket, row["currency"], row["captured_minor"] or 0),
        ]
    refunds = (
        Refund.objects.filter(created_at__gte=since, status=RefundStatus.SUCCEEDED)
        .annotate(day=TruncDate("created_at", tzinfo=tz))
        .values("day", "payment__currency")
        .annotate(count=Count("pk"), total=Sum("amount_minor"))
        .order_by()
    )
    for row in refunds:
        bucket = day(row["day"])
        rows += [
            ("refunds_succeeded", bucket, row["payment__currency"], row["count"]),
            ("refunds_succeeded_minor", bucket, row["payment__currency"], row["total"] or 0),
        ]
    # A failed payment's decline code is its last attempt's; retried payments are pending again.
    declines = (
        Payment.objects.filter(created_at__gte=since, status=PaymentStatus.FAILED)
        .annotate(day=TruncDate("created_at", tzinfo=tz))
        .values("day", "attempts__error_code")
        .annotate(count=Count("pk", distinct=True))
        .order_by()
    )
    for row in declines:
        rows.append(("payments_declined", day(row["day"]), row["attempts__error_code"] or "unknown", row["count"]))
    return figures_replace(series=PAYMENT_SERIES, buckets=buckets, rows=rows)


def payment_status_gauges():
    """paydesk_payments{status} for /metrics: one GROUP BY on the (status, created_at) index."""
    from prometheus_client.core import GaugeMetricFamily

    family = GaugeMetricFamily("paydesk_payments", "Payments by status.", labels=["status"])
    counts = dict(Payment.objects.values("status").annotate(n=Count("pk")).order_by().values_list("status", "n"))
    for status in PaymentStatus.values:
        family.add_metric([status], counts.get(status, 0))
    needs_review = GaugeMetricFamily(
        "paydesk_payments_needing_review", "Unknown payments that every scheduled lookup failed to settle."
    )
    needs_review.add_metric([], Payment.objects.filter(status=PaymentStatus.UNKNOWN, needs_review=True).count())
    yield from (family, needs_review)
