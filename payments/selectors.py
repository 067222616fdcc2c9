"""Reads shared by the services, the jobs, the admin and the portal. No writes here."""

from django.conf import settings
from django.db.models import QuerySet, Sum

from backoffice.models import Job, JobStatus
from payments.models import Payment, PaymentAttempt, Refund
from payments.money import major_to_minor
from payments.states import REFUND_HOLDING, AttemptOutcome, PaymentStatus

ACTIVE_JOB_STATUSES = (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.RETRYING)


def payment_active_jobs(payment: Payment, *, func: str) -> QuerySet[Job]:
    """The payment's jobs running `func` that are not finished (pending, queued, running, retrying)."""
    return Job.objects.filter(
        content_type__app_label="payments",
        content_type__model="payment",
        object_id=str(payment.pk),
        func=func,
        status__in=ACTIVE_JOB_STATUSES,
    )


def payment_unknown_attempt(*, payment_id: int) -> PaymentAttempt | None:
    """The attempt whose outcome the recovery job must look up, if the payment is still unknown."""
    payment = Payment.objects.get(pk=payment_id)
    if payment.status != PaymentStatus.UNKNOWN:
        return None
    return payment.attempts.filter(outcome=AttemptOutcome.UNKNOWN).order_by("-number").first()


def refund_remaining_minor(payment: Payment) -> int:
    """What can still be refunded: the captured amount less every refund not failed or rejected."""
    if not payment.is_captured():
        return 0
    held = payment.refunds.filter(status__in=REFUND_HOLDING).aggregate(total=Sum("amount_minor"))["total"] or 0
    return max(payment.amount_minor - held, 0)


def refund_approval_threshold_minor(currency: str) -> int:
    """The refund amount (minor units) at or above which a second person must approve."""
    thresholds = settings.PAYMENTS_REFUND_APPROVAL_THRESHOLD
    return major_to_minor(thresholds.get(currency, thresholds.get("default", "0")), currency)


def refund_charge_reference(refund: Refund) -> str:
    """The gateway's reference of the charge the refund gives back ("" when none succeeded)."""
    attempt = refund.payment.attempts.filter(outcome=AttemptOutcome.SUCCEEDED).first()
    return attempt.gateway_reference if attempt else ""
