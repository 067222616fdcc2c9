"""Payments' cards on the admin's home page: what needs a person, the figures of today, 7 and
30 days, and the charts. Figures come from payments.figures (pre-aggregated); counts are
capped counts on indexed columns."""

import re
from collections import Counter
from datetime import timedelta

import pygal
from django.contrib.contenttypes.models import ContentType
from django.db.models import CharField, Exists, OuterRef
from django.db.models.functions import Cast
from django.urls import reverse
from django.utils import timezone

from backoffice.charts import new_chart, register_chart
from backoffice.dashboard import attention_item, register_attention, register_card
from backoffice.figures import day_start, figures_computed_at, figures_read
from backoffice.models import Job
from payments.figures import PAYMENT_SERIES
from payments.models import Payment, Refund, SettlementRequest
from payments.money import currency_exponent, format_minor
from payments.selectors import ACTIVE_JOB_STATUSES
from payments.states import PaymentStatus, RefundStatus, SettlementStatus


def payments_without_live_job():
    """Pending payments that nothing will process: their job failed, was canceled or lost."""
    live = Job.objects.filter(
        content_type=ContentType.objects.get_for_model(Payment),
        object_id=Cast(OuterRef("pk"), output_field=CharField()),
        status__in=ACTIVE_JOB_STATUSES,
    )
    return Payment.objects.filter(status=PaymentStatus.PENDING).filter(~Exists(live))


def _changelist(model_name: str, query: str) -> str:
    return reverse(f"admin:payments_{model_name}_changelist") + "?" + query


def payments_attention(request) -> list:
    user = request.user
    candidates = []
    if user.has_perm("payments.request_settlement"):
        candidates += [
            attention_item(
                "Unknown payments needing review",
                Payment.objects.filter(status=PaymentStatus.UNKNOWN, needs_review=True),
                _changelist("payment", "needs_review__exact=1"),
                severity="error",
            ),
            attention_item(
                "Unknown payments (lookups still scheduled)",
                Payment.objects.filter(status=PaymentStatus.UNKNOWN, needs_review=False),
                _changelist("payment", "status__exact=unknown&needs_review__exact=0"),
            ),
        ]
    if user.has_perm("payments.process_payment"):
        candidates.append(
            attention_item(
                "Pending payments with no live job",
                payments_without_live_job(),
                _changelist("payment", "live_job=none"),
                severity="error",
            )
        )
    if user.has_perm("payments.approve_refund"):
        candidates.append(
            attention_item(
                "Refunds awaiting my approval",
                Refund.objects.filter(status=RefundStatus.REQUESTED).exclude(requested_by=user),
                _changelist("refund", "awaiting=me"),
            )
        )
    if user.has_perm("payments.approve_settlement"):
        candidates.append(
            attention_item(
                "Manual settlements awaiting my approval",
                SettlementRequest.objects.filter(status=SettlementStatus.REQUESTED).exclude(requested_by=user),
                _changelist("settlementrequest", "awaiting=me"),
            )
        )
    if user.has_perm("payments.request_refund"):
        week_ago = timezone.now() - timedelta(days=7)
        candidates.append(
            attention_item(
                "Refunds failed at the processor (7 days)",
                Refund.objects.filter(status=RefundStatus.FAILED, created_at__gte=week_ago),
                _changelist("refund", f"status__exact=failed&created_at__gte={week_ago:%Y-%m-%d}"),
                severity="error",
            )
        )
    return [item for item in candidates if item]


# --- figures ---------------------------------------------------------------------------------

CURRENCY = re.compile(r"[A-Z]{3}")
PERIODS = (("Today", 1), ("7 days", 7), ("30 days", 30))


def _sum(table: dict, series: str, since) -> Counter:
    totals: Counter = Counter()
    for bucket, by_key in table.get(series, {}).items():
        if bucket >= since:
            totals.update(by_key)
    return totals


def figures_context(request) -> dict | None:
    if not request.user.has_perm("payments.view_payment"):
        return None
    today = day_start()
    table = figures_read(PAYMENT_SERIES, since=today - timedelta(days=29))
    periods = []
    for label, days in PERIODS:
        since = today - timedelta(days=days - 1)
        created = _sum(table, "payments_created", since)
        captured = _sum(table, "payments_captured", since)
        failed = _sum(table, "payments_failed", since)
        volume = _sum(table, "payments_captured_minor", since)
        refunded = _sum(table, "refunds_succeeded_minor", since)
        decided = sum(captured.values()) + sum(failed.values())
        periods.append(
            {
                "label": label,
                "count": sum(created.values()),
                "success_rate": f"{100 * sum(captured.values()) / decided:.1f}%" if decided else "–",
                "volumes": [format_minor(volume[code], code) for code in sorted(volume) if volume[code]],
                "refunds": [format_minor(refunded[code], code) for code in sorted(refunded) if refunded[code]],
            }
        )
    declines = _sum(table, "payments_declined", today - timedelta(days=29)).most_common(5)
    return {
        "periods": periods,
        "declines": declines,
        "computed_at": figures_computed_at(PAYMENT_SERIES),
        "failed_url": _changelist("payment", "status__exact=failed"),
    }


def charts_context(request) -> dict | None:
    if not request.user.has_perm("payments.view_payment"):
        return None
    volume = _sum(figures_read(["payments_captured_minor"], since=_days()[0]), "payments_captured_minor", _days()[0])
    return {"currencies": [code for code, _ in volume.most_common(4)]}


# --- charts ----------------------------------------------------------------------------------


def _days(count: int = 30) -> list:
    today = day_start()
    return [today - timedelta(days=back) for back in range(count - 1, -1, -1)]


def _label(day) -> str:
    return f"{timezone.localtime(day):%d %b}"


def outcomes_chart(request):
    if not request.user.has_perm("payments.view_payment"):
        return None
    days = _days()
    table = figures_read(PAYMENT_SERIES, since=days[0])

    def per_day(series: str) -> list[int]:
        return [sum(table[series].get(day, {}).values()) for day in days]

    captured, failed, created = per_day("payments_captured"), per_day("payments_failed"), per_day("payments_created")
    chart = new_chart(pygal.StackedBar, title="Payments per day (30 days)")
    chart.x_labels = [_label(day) for day in days]
    chart.x_labels_major = chart.x_labels[::5]
    chart.add("captured", captured)
    chart.add("failed", failed)
    chart.add(
        "other (pending, unknown, canceled)", [n - a - b for n, a, b in zip(created, captured, failed, strict=True)]
    )
    return chart


def success_rate_chart(request):
    if not request.user.has_perm("payments.view_payment"):
        return None
    days = _days()
    table = figures_read(["payments_captured", "payments_failed"], since=days[0])
    rates = []
    for day in days:
        captured = sum(table["payments_captured"].get(day, {}).values())
        failed = sum(table["payments_failed"].get(day, {}).values())
        rates.append(round(100 * captured / (captured + failed), 1) if captured + failed else None)
    chart = new_chart(pygal.Line, title="Success rate per day, % of decided payments (30 days)", show_legend=False)
    chart.range = (0, 100)
    chart.x_labels = [_label(day) for day in days]
    chart.x_labels_major = chart.x_labels[::5]
    chart.add("success rate", rates, allow_interruptions=True)
    return chart


def volume_chart(request):
    """Captured volume per day of one currency (?currency=EUR): currencies differ by orders of
    magnitude (JPY, KWD), so each gets its own chart and scale."""
    code = request.GET.get("currency", "")
    if not request.user.has_perm("payments.view_payment") or not CURRENCY.fullmatch(code):
        return None
    days = _days()
    table = figures_read(["payments_captured_minor"], since=days[0])["payments_captured_minor"]
    # Major units for drawing only: money itself stays integer minor units.
    values = [table.get(day, {}).get(code, 0) / 10 ** currency_exponent(code) for day in days]
    chart = new_chart(pygal.Bar, title=f"Captured volume per day, {code} (30 days)", show_legend=False)
    chart.x_labels = [_label(day) for day in days]
    chart.x_labels_major = chart.x_labels[::5]
    chart.add(code, values)
    return chart


def declines_chart(request):
    if not request.user.has_perm("payments.view_payment"):
        return None
    table = figures_read(["payments_declined"], since=_days()[0])
    totals = _sum(table, "payments_declined", _days()[0]).most_common(8)
    chart = new_chart(pygal.HorizontalBar, title="Failed payments by decline code (30 days)", show_legend=False)
    chart.x_labels = [code for code, _ in totals]
    chart.add("failed payments", [count for _, count in totals])
    return chart


def register() -> None:
    register_attention(payments_attention)
    register_card(
        name="payments.figures", template="payments/dashboard/figures.html", context=figures_context, order=20
    )
    register_card(
        name="payments.charts", template="payments/dashboard/charts.html", context=charts_context, order=30, wide=True
    )
    register_chart("payments-outcomes", outcomes_chart)
    register_chart("payments-success", success_rate_chart)
    register_chart("payments-volume", volume_chart)
    register_chart("payments-declines", declines_chart)
