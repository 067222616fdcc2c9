"""Reads behind the portal's pages, each starting from one merchant: dashboard figures, what
needs attention, and what of a payment's history a merchant may see."""

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Q, Sum
from django.urls import reverse
from django.utils import timezone

from backoffice.figures import day_start, figures_read
from payments.figures import MERCHANT_MEASURES, merchant_series
from payments.models import Membership, Merchant, Payment, PaymentAttempt, PaymentEvent, Refund
from payments.money import format_minor
from payments.states import CAPTURED, AttemptOutcome, PaymentStatus, RefundStatus

# Payments and refunds whose status may still change on its own: their pages poll.
MOVING_PAYMENT_STATUSES = frozenset({PaymentStatus.PENDING, PaymentStatus.PROCESSING, PaymentStatus.UNKNOWN})
MOVING_REFUND_STATUSES = frozenset(
    {RefundStatus.REQUESTED, RefundStatus.APPROVED, RefundStatus.PROCESSING, RefundStatus.UNKNOWN}
)


@dataclass(frozen=True)
class PeriodSummary:
    label: str
    volumes: list[str]  # captured amount per currency, formatted
    captured: int
    failed: int

    @property
    def success_rate(self) -> str:
        decided = self.captured + self.failed
        return f"{100 * self.captured / decided:.1f}%" if decided else "–"


def period_summary(merchant: Merchant, *, label: str, since: datetime) -> PeriodSummary:
    """Captured volume per currency and the share of decided payments that were captured.
    Whole days before today come from the merchant's pre-aggregated figures (payments.figures,
    refreshed by the sweeper process); today is read live on the (merchant, created_at) index."""
    today = day_start()
    captured: Counter = Counter()
    failed: Counter = Counter()
    volume: Counter = Counter()
    if since < today:
        names = {measure: merchant_series(merchant.pk, measure) for measure in MERCHANT_MEASURES}
        table = figures_read(names.values(), since=since)
        for counter, measure in ((captured, "captured"), (failed, "failed"), (volume, "captured_minor")):
            for bucket, by_currency in table.get(names[measure], {}).items():
                if bucket < today:
                    counter.update(by_currency)
    live = (
        Payment.objects.filter(merchant=merchant, created_at__gte=max(since, today))
        .values("currency")
        .annotate(
            captured=Count("id", filter=Q(status__in=CAPTURED)),
            failed=Count("id", filter=Q(status=PaymentStatus.FAILED)),
            volume=Sum("amount_minor", filter=Q(status__in=CAPTURED)),
        )
        .order_by()
    )
    for row in live:
        captured[row["currency"]] += row["captured"]
        failed[row["currency"]] += row["failed"]
        volume[row["currency"]] += row["volume"] or 0
    return PeriodSummary(
        label=label,
        volumes=[format_minor(volume[code], code) for code in sorted(volume) if volume[code]],
        captured=sum(captured.values()),
        failed=sum(failed.values()),
    )


def dashboard_periods(merchant: Merchant) -> list[PeriodSummary]:
    today = day_start()
    return [
        period_summary(merchant, label="Today", since=today),
        period_summary(merchant, label="This month", since=today.replace(day=1)),
    ]


@dataclass(frozen=True)
class AttentionItem:
    label: str
    count: int
    url: str = ""


def payments_needing_attention(merchant: Merchant) -> list[AttentionItem]:
    payments_url = reverse("merchant:payments")
    week_ago = timezone.now() - timedelta(days=7)
    payments = Payment.objects.filter(merchant=merchant)
    refunds = Refund.objects.filter(payment__merchant=merchant)
    items = [
        AttentionItem(
            "Failed payments in the last 7 days",
            payments.filter(status=PaymentStatus.FAILED, created_at__gte=week_ago).count(),
            f"{payments_url}?status={PaymentStatus.FAILED}&date_from={week_ago.date().isoformat()}",
        ),
        AttentionItem(
            "Payments awaiting the bank's answer (unknown)",
            payments.filter(status=PaymentStatus.UNKNOWN).count(),
            f"{payments_url}?status={PaymentStatus.UNKNOWN}",
        ),
        AttentionItem("Refunds awaiting approval by Paydesk", refunds.filter(status=RefundStatus.REQUESTED).count()),
        AttentionItem(
            "Refunds failed in the last 7 days",
            refunds.filter(status=RefundStatus.FAILED, updated_at__gte=week_ago).count(),
        ),
    ]
    return [item for item in items if item.count]


def member_user_ids(merchant: Merchant) -> set[int]:
    return set(Membership.objects.filter(merchant=merchant).values_list("user_id", flat=True))


def person_for_merchant(user, member_ids: set[int]) -> str:
    """A merchant sees their own team by name; Paydesk's staff and machinery as "Paydesk"."""
    if user is not None and user.pk in member_ids:
        return user.get_full_name() or user.get_username()
    return "Paydesk"


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    from_status: str
    to_status: str
    actor: str
    reason: str  # only the merchant's own words: staff and gateway notes stay inside


def timeline_for_merchant(events, member_ids: set[int], status_labels: dict[str, str]) -> list[TimelineEntry]:
    return [
        TimelineEntry(
            at=event.created_at,
            from_status=status_labels.get(event.from_status, event.from_status),
            to_status=status_labels.get(event.to_status, event.to_status),
            actor=person_for_merchant(event.actor, member_ids),
            reason=event.reason if event.actor_id in member_ids else "",
        )
        for event in events
    ]


def payment_timeline(payment: Payment, member_ids: set[int]) -> list[TimelineEntry]:
    events = PaymentEvent.objects.filter(payment=payment).select_related("actor")
    return timeline_for_merchant(events, member_ids, dict(PaymentStatus.choices))


@dataclass(frozen=True)
class AttemptForMerchant:
    number: int
    at: datetime
    completed_at: datetime | None
    outcome: str
    code: str
    message: str


def attempt_for_merchant(attempt: PaymentAttempt) -> AttemptForMerchant:
    """Decline codes and messages are meant for merchants; gateway errors, keys and timings are ours."""
    if attempt.outcome == AttemptOutcome.DECLINED:
        code, message = attempt.error_code, attempt.error_message
    elif attempt.outcome == AttemptOutcome.UNKNOWN:
        code, message = "awaiting_confirmation", "The bank has not confirmed the result yet; Paydesk is checking."
    elif attempt.outcome == AttemptOutcome.NOT_FOUND:
        code, message = "not_charged", "The charge never reached the bank; nothing was taken."
    elif attempt.outcome == AttemptOutcome.SUCCEEDED:
        code, message = "", "Approved."
    else:
        code, message = "", "Waiting for the bank."
    return AttemptForMerchant(
        number=attempt.number,
        at=attempt.created_at,
        completed_at=attempt.completed_at,
        outcome=attempt.get_outcome_display(),
        code=code,
        message=message,
    )


def refunds_for_merchant(payment: Payment, member_ids: set[int]) -> list[dict]:
    refunds = payment.refunds.select_related("requested_by").prefetch_related("events__actor").order_by("created_at")
    labels = dict(RefundStatus.choices)
    return [
        {
            "refund": refund,
            "amount": format_minor(refund.amount_minor, payment.currency),
            "requested_by": person_for_merchant(refund.requested_by, member_ids),
            # A merchant sees the reason they gave, and why Paydesk rejected it.
            "reason": refund.reason if refund.requested_by_id in member_ids else "",
            "decision_note": refund.decision_note if refund.requested_by_id in member_ids else "",
            "timeline": timeline_for_merchant(refund.events.all(), member_ids, labels),
        }
        for refund in refunds
    ]


def payment_status_token(payment: Payment) -> str:
    """Changes whenever the payment or one of its refunds changes status: the page reloads then."""
    refund_statuses = ",".join(payment.refunds.order_by("pk").values_list("status", flat=True))
    return f"{payment.status}|{refund_statuses}"


def is_moving(payment: Payment) -> bool:
    return (
        payment.status in MOVING_PAYMENT_STATUSES or payment.refunds.filter(status__in=MOVING_REFUND_STATUSES).exists()
    )
