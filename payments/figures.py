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
from payments.models import Merchant, Payment, Refund
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


# Per merchant, for the portal's dashboard: one series per merchant and measure (the unique
# index on (series, bucket, key) then reads one merchant's month directly), keyed by currency.
MERCHANT_MEASURES = ("captured", "failed", "captured_minor")


def merchant_series(merchant_id: int, measure: str) -> str:
    return f"merchant:{merchant_id}:{measure}"


def payment_figures_refresh(*, days: int = 2) -> int:
    """Recompute the figures of the last `days` days (today included); returns rows written."""
    today = day_start()
    buckets = [today - timedelta(days=back) for back in range(days)]
    since = buckets[-1]
    tz = timezone.get_current_timezone()

    def day(value: date) -> datetime:
        return datetime.combine(value, time.min, tzinfo=tz)

    rows = []
    totals: dict[tuple, dict[str, int]] = {}
    merchant_rows, merchant_ids = [], set()
    payments = (
        Payment.objects.filter(created_at__gte=since)
        .annotate(day=TruncDate("created_at", tzinfo=tz))
        .values("day", "merchant_id", "currency")
        .annotate(
            created=Count("pk"),
            captured=Count("pk", filter=Q(status__in=CAPTURED)),
            failed=Count("pk", filter=Q(status=PaymentStatus.FAILED)),
            captured_minor=Sum("amount_minor", filter=Q(status__in=CAPTURED)),
        )
        .order_by()
    )
    for row in payments:
        bucket, merchant_id = day(row["day"]), row["merchant_id"]
        total = totals.setdefault((bucket, row["currency"]), dict.fromkeys(("created", "captured", "failed"), 0))
        total["captured_minor"] = total.get("captured_minor", 0) + (row["captured_minor"] or 0)
        for measure in ("created", "captured", "failed"):
            total[measure] += row[measure]
        merchant_ids.add(merchant_id)
        merchant_rows += [
            (merchant_series(merchant_id, "captured"), bucket, row["currency"], row["captured"]),
            (merchant_series(merchant_id, "failed"), bucket, row["currency"], row["failed"]),
            (merchant_series(merchant_id, "captured_minor"), bucket, row["currency"], row["captured_minor"] or 0),
        ]
    for (bucket, currency), total in totals.items():
        rows += [
            ("payments_created", bucket, currency, total["created"]),
            ("payments_captured", bucket, currency, total["captured"]),
            ("payments_failed", bucket, currency, total["failed"]),
            ("payments_captured_minor", bucket, currency, total["captured_minor"]),
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
    written = figures_replace(series=PAYMENT_SERIES, buckets=buckets, rows=rows)
    # Every merchant's series in these days are replaced, also those left with no payment there.
    merchant_ids |= set(Merchant.objects.values_list("pk", flat=True))
    every_series = [merchant_series(pk, measure) for pk in sorted(merchant_ids) for measure in MERCHANT_MEASURES]
    return written + figures_replace(series=every_series, buckets=buckets, rows=merchant_rows)


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
