"""Payment states and the allowed transitions: pure data, no database."""

from django.db.models import TextChoices


class PaymentStatus(TextChoices):
    PENDING = "pending", "Pending"
    PROCESSING = "processing", "Processing"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    UNKNOWN = "unknown", "Unknown"
    CANCELED = "canceled", "Canceled"
    PARTIALLY_REFUNDED = "partially_refunded", "Partially refunded"
    REFUNDED = "refunded", "Refunded"


class AttemptOutcome(TextChoices):
    PENDING = "pending", "Awaiting gateway"
    SUCCEEDED = "succeeded", "Succeeded"
    DECLINED = "declined", "Declined"
    UNKNOWN = "unknown", "Unknown"
    NOT_FOUND = "not_found", "Never reached the gateway"


S = PaymentStatus
# name of the transition method on Payment -> (sources, target)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "start_processing": ((S.PENDING,), S.PROCESSING),
    "succeed": ((S.PROCESSING, S.UNKNOWN), S.SUCCEEDED),
    "fail": ((S.PROCESSING, S.UNKNOWN), S.FAILED),
    "mark_unknown": ((S.PROCESSING,), S.UNKNOWN),
    "retry": ((S.FAILED,), S.PENDING),
    "cancel": ((S.PENDING,), S.CANCELED),
    "refund_partially": ((S.SUCCEEDED, S.PARTIALLY_REFUNDED), S.PARTIALLY_REFUNDED),
    "refund_fully": ((S.SUCCEEDED, S.PARTIALLY_REFUNDED), S.REFUNDED),
}

# A payment in these states has money captured at the gateway.
CAPTURED = frozenset({S.SUCCEEDED, S.PARTIALLY_REFUNDED, S.REFUNDED})


class RefundStatus(TextChoices):
    REQUESTED = "requested", "Awaiting approval"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    PROCESSING = "processing", "Processing"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    UNKNOWN = "unknown", "Unknown"


R = RefundStatus
# processing -> unknown: no clear answer after PAYMENTS_REFUND_SENDS sends under the refund's
# key; then lookups by that key (PAYMENTS_RECOVERY_SCHEDULE_SECONDS), or a manual settlement.
REFUND_TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "approve": ((R.REQUESTED,), R.APPROVED),
    "reject": ((R.REQUESTED,), R.REJECTED),
    "start_processing": ((R.APPROVED,), R.PROCESSING),
    "succeed": ((R.PROCESSING, R.UNKNOWN), R.SUCCEEDED),
    "fail": ((R.PROCESSING, R.UNKNOWN), R.FAILED),
    "mark_unknown": ((R.PROCESSING,), R.UNKNOWN),
}
# Refunds that hold part of the captured amount: everything but failed and rejected.
REFUND_HOLDING = frozenset({R.REQUESTED, R.APPROVED, R.PROCESSING, R.UNKNOWN, R.SUCCEEDED})


class SettlementStatus(TextChoices):
    REQUESTED = "requested", "Awaiting approval"
    APPROVED = "approved", "Approved and applied"
    REJECTED = "rejected", "Rejected"


SETTLEMENT_TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "approve": ((SettlementStatus.REQUESTED,), SettlementStatus.APPROVED),
    "reject": ((SettlementStatus.REQUESTED,), SettlementStatus.REJECTED),
}
