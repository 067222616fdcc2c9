"""The ledger's vocabulary: account kinds, causes of transactions, payout states. Pure data."""

from django.db.models import TextChoices


class AccountKind(TextChoices):
    # A merchant's, per currency. Positive = Paydesk owes the merchant this much.
    PENDING = "pending", "Pending (captured, not yet available)"
    AVAILABLE = "available", "Available"
    RESERVED = "reserved", "Reserved for refunds in flight"
    PAYOUTS_IN_TRANSIT = "payouts_in_transit", "Payouts in transit"
    # The platform's, per currency (no merchant).
    PROCESSOR_RECEIVABLE = "processor_receivable", "Processor receivable"
    FEE_REVENUE = "fee_revenue", "Fee revenue"
    PAYOUTS_SENT = "payouts_sent", "Payouts sent (bank)"
    ADJUSTMENTS = "adjustments", "Adjustments"


MERCHANT_KINDS = (AccountKind.PENDING, AccountKind.AVAILABLE, AccountKind.RESERVED, AccountKind.PAYOUTS_IN_TRANSIT)
PLATFORM_KINDS = (
    AccountKind.PROCESSOR_RECEIVABLE,
    AccountKind.FEE_REVENUE,
    AccountKind.PAYOUTS_SENT,
    AccountKind.ADJUSTMENTS,
)


class Cause(TextChoices):
    CAPTURE = "capture", "Capture (with its fee)"
    RELEASE = "release", "Pending funds become available"
    REFUND_HOLD = "refund_hold", "Refund requested: amount reserved"
    REFUND = "refund", "Refund sent"
    REFUND_RELEASE = "refund_release", "Refund failed or rejected: reserve returned"
    PAYOUT = "payout", "Payout created"
    PAYOUT_PAID = "payout_paid", "Payout paid"
    PAYOUT_FAILED = "payout_failed", "Payout failed: money returned"
    ADJUSTMENT = "adjustment", "Adjustment"
    CORRECTION = "correction", "Correction of an earlier transaction"


class PayoutStatus(TextChoices):
    REQUESTED = "requested", "Awaiting approval"
    REJECTED = "rejected", "Rejected"
    PENDING = "pending", "Pending"
    IN_TRANSIT = "in_transit", "In transit"
    PAID = "paid", "Paid"
    FAILED = "failed", "Failed"


P = PayoutStatus
# name -> (sources, target). Money leaves the available balance on entering pending and comes
# back on failed; paid closes it.
PAYOUT_TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "approve": ((P.REQUESTED,), P.PENDING),
    "reject": ((P.REQUESTED,), P.REJECTED),
    "send": ((P.PENDING,), P.IN_TRANSIT),
    "mark_paid": ((P.IN_TRANSIT,), P.PAID),
    "mark_failed": ((P.PENDING, P.IN_TRANSIT), P.FAILED),
}


class PayoutOrigin(TextChoices):
    SCHEDULE = "schedule", "Daily schedule"
    FINANCE = "finance", "On demand by Finance"
