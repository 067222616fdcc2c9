"""Refund services: request (by staff or a merchant's owner), approve or reject (four eyes),
and apply what the gateway says. Each locks the payment first, so concurrent requests can
never together refund more than the capture."""

from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from backoffice.actors import Actor
from backoffice.models import Job
from backoffice.services import audit_record, job_enqueue
from payments.errors import PaymentError
from payments.gateways import GatewayOutcome, LookupResult, RefundResult
from payments.models import Membership, Payment, Refund
from payments.money import format_minor
from payments.selectors import refund_approval_threshold_minor, refund_remaining_minor
from payments.services.common import (
    event_record,
    lock_for_second_person,
    payment_lock,
    require_perm,
    status_transition,
    wrong_status,
)
from payments.states import REFUND_HOLDING, PaymentStatus, RefundStatus
from payments.validators import require_reason, require_request_key

REFUND_JOB = "payments.jobs.refund_payment"
RECOVER_REFUND_JOB = "payments.jobs.recover_refund"


class RefundOutcomeUnknown(Exception):
    """The gateway gave no clear answer; the job retries under the same idempotency key."""


def _enqueue_refund(refund: Refund, *, actor: Actor = None) -> Job:
    return job_enqueue(
        func=REFUND_JOB,
        kwargs={"refund_id": refund.pk},
        queue="payments",
        concerns=refund.payment,
        requested_by=actor,
    )


def refund_request(
    *, payment: Payment, amount_minor: int, reason: str, requested_by: Actor, request_key: str
) -> tuple[Refund, bool]:
    """Lock the payment, check the refund fits in what remains refundable (so concurrent
    requests can never together exceed the capture), create it; below the approval
    threshold approve it at once and queue the refund job. The same request key again
    returns (the first refund, False): a request refunds once, whatever Redis says."""
    requester = require_perm(requested_by, "payments.request_refund", "request refunds")
    return _refund_create(
        payment=payment, amount_minor=amount_minor, reason=reason, requested_by=requester, request_key=request_key
    )


def _refund_create(
    *,
    payment: Payment,
    amount_minor: int,
    reason: str,
    requested_by: User,
    request_key: str,
    audit_details: dict[str, str] | None = None,
) -> tuple[Refund, bool]:
    """The checks and writes every refund request shares, once its requester is authorised."""
    request_key = require_request_key(request_key)
    reason = require_reason(reason, "refund")
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise PaymentError({"amount_minor": ["The refund amount must be a whole number of minor units."]})
    with transaction.atomic():
        payment = payment_lock(payment.pk)
        # Under the payment's lock: a concurrent post of the same request waits here, then
        # finds the refund the first one made (the unique constraint backs this up).
        earlier = payment.refunds.filter(request_key=request_key).first()
        if earlier is not None:
            return earlier, False
        if payment.status == PaymentStatus.UNKNOWN:
            raise PaymentError("not refundable until its outcome is resolved (it is unknown)", code="wrong_status")
        if not payment.is_captured() or payment.status == PaymentStatus.REFUNDED:
            raise wrong_status(payment, "refundable")
        if amount_minor <= 0:
            raise PaymentError({"amount_minor": ["The refund amount must be greater than zero."]}, code="amount")
        remaining = refund_remaining_minor(payment)
        if amount_minor > remaining:
            raise PaymentError(
                {
                    "amount_minor": [
                        f"{format_minor(amount_minor, payment.currency)} is more than the "
                        f"{format_minor(remaining, payment.currency)} that remains refundable."
                    ]
                },
                code="amount_exceeds_remaining",
            )
        # Four eyes look at the total refunded without them, so splitting a large refund
        # into small ones does not slip past the threshold.
        approved_alone = (
            payment.refunds.filter(status__in=REFUND_HOLDING, needs_approval=False).aggregate(
                total=Sum("amount_minor")
            )["total"]
            or 0
        )
        needs_approval = approved_alone + amount_minor >= refund_approval_threshold_minor(payment.currency)
        refund = Refund.objects.create(
            payment=payment,
            amount_minor=amount_minor,
            reason=reason,
            requested_by=requested_by,
            needs_approval=needs_approval,
            request_key=request_key,
        )
        event_record(refund, from_status="", actor=requested_by, reason=reason)
        audit_record(
            actor=requested_by,
            action="refund_request",
            target=payment,
            reason=reason,
            details={"refund": refund.public_id, "amount_minor": amount_minor, **(audit_details or {})},
        )
        if not needs_approval:
            refund.decided_at = timezone.now()
            status_transition(
                refund, "approve", actor_label="system", reason="below the approval threshold: approved automatically"
            )
            _enqueue_refund(refund, actor=requested_by)
    return refund, True


def refund_approve(*, refund: Refund, approver: Actor, note: str = "") -> Refund:
    """A second person with approve_refund approves; locks payment and refund, queues the refund job."""
    with transaction.atomic():
        decider = require_perm(approver, "payments.approve_refund", "approve refunds")
        refund = lock_for_second_person(refund, approver=decider)
        refund.approved_by, refund.decided_at, refund.decision_note = decider, timezone.now(), note.strip()
        status_transition(refund, "approve", actor=approver, reason=note.strip() or "approved")
        audit_record(
            actor=approver,
            action="refund_approve",
            target=refund.payment,
            reason=note.strip(),
            details={"refund": refund.public_id},
        )
        _enqueue_refund(refund, actor=approver)
    return refund


def refund_reject(*, refund: Refund, approver: Actor, note: str) -> Refund:
    """A second person with approve_refund rejects, with a required note; the amount is freed."""
    note = require_reason(note, "reject a refund")
    with transaction.atomic():
        decider = require_perm(approver, "payments.approve_refund", "reject refunds")
        refund = lock_for_second_person(refund, approver=decider)
        refund.rejected_by, refund.decided_at, refund.decision_note = decider, timezone.now(), note
        status_transition(refund, "reject", actor=approver, reason=note)
        audit_record(
            actor=approver,
            action="refund_reject",
            target=refund.payment,
            reason=note,
            details={"refund": refund.public_id},
        )
    return refund


def refund_processing_start(*, refund_id: int) -> Refund | None:
    """Lock the refund and return it to send to the gateway: approved -> processing, or
    already processing (a previous run died or got no clear answer; same key). None when done."""
    with transaction.atomic():
        refund = Refund.objects.select_for_update().select_related("payment").get(pk=refund_id)
        if refund.status == RefundStatus.APPROVED:
            status_transition(refund, "start_processing", actor_label="worker")
        elif refund.status != RefundStatus.PROCESSING:
            return None
        return refund


def refund_result_apply(*, refund_id: int, result: RefundResult) -> Refund:
    """Record the gateway's answer: succeeded moves the payment to partially refunded or
    refunded; declined fails the refund and frees its amount. Applied once. No clear answer:
    raise (the runner sends it again under the same key), and after PAYMENTS_REFUND_SENDS such
    answers the refund becomes unknown and its key is looked up on a schedule instead."""
    if result.outcome == GatewayOutcome.UNKNOWN:
        refund = _refund_answer_unclear(refund_id=refund_id, result=result)
        if refund.status == RefundStatus.PROCESSING:
            raise RefundOutcomeUnknown(f"{result.error_code}: {result.error_message}")
        return refund
    with transaction.atomic():
        payment, refund = _refund_lock(refund_id)
        if refund.status != RefundStatus.PROCESSING:
            return refund
        refund.error_code, refund.error_message = result.error_code, result.error_message
        refund_outcome_record(
            refund,
            payment,
            succeeded=result.outcome == GatewayOutcome.SUCCEEDED,
            gateway_reference=result.gateway_reference,
            actor_label="worker",
            reason="refunded by the gateway"
            if result.outcome == GatewayOutcome.SUCCEEDED
            else f"declined: {result.error_code}",
        )
    return refund


def _refund_lock(refund_id: int) -> tuple[Payment, Refund]:
    """The payment, then the refund, locked (the order every refund service takes them in)."""
    refund = Refund.objects.get(pk=refund_id)
    payment = payment_lock(refund.payment_id)
    refund = Refund.objects.select_for_update().get(pk=refund_id)
    refund.payment = payment
    return payment, refund


def refund_outcome_record(
    refund: Refund,
    payment: Payment,
    *,
    succeeded: bool,
    gateway_reference: str = "",
    actor: Actor = None,
    actor_label: str = "",
    reason: str,
) -> None:
    """In the caller's transaction, with payment and refund locked: the refund succeeded (the
    payment becomes partially refunded or refunded) or failed (its amount is freed); events and
    signals (ledger, webhooks) follow. Shared by the gateway's answer, a lookup and a manual settlement."""
    refund.gateway_reference = gateway_reference or refund.gateway_reference
    refund.completed_at = timezone.now()
    if not succeeded:
        status_transition(refund, "fail", actor=actor, actor_label=actor_label, reason=reason)
        return
    status_transition(refund, "succeed", actor=actor, actor_label=actor_label, reason=reason)
    refunded = payment.refunds.filter(status=RefundStatus.SUCCEEDED).aggregate(total=Sum("amount_minor"))["total"]
    status_transition(
        payment,
        "refund_fully" if refunded >= payment.amount_minor else "refund_partially",
        actor=actor,
        actor_label=actor_label,
        reason=f"refund {refund.public_id} of {refund.amount_display} succeeded",
    )


def _refund_answer_unclear(*, refund_id: int, result: RefundResult) -> Refund:
    """Count a send with no clear answer; at PAYMENTS_REFUND_SENDS the refund becomes unknown
    and the first lookup by its key is scheduled."""
    with transaction.atomic():
        payment, refund = _refund_lock(refund_id)
        if refund.status != RefundStatus.PROCESSING:
            return refund
        refund.unclear_answers += 1
        refund.error_code, refund.error_message = result.error_code, result.error_message
        if refund.unclear_answers < settings.PAYMENTS_REFUND_SENDS:
            refund.save(update_fields=["unclear_answers", "error_code", "error_message", "updated_at"])
            return refund
        status_transition(
            refund,
            "mark_unknown",
            actor_label="worker",
            reason=f"no clear answer from the gateway after {refund.unclear_answers} sends: {result.error_code}",
        )
        _schedule_refund_recovery(refund, lookups_done=0)
    return refund


def _schedule_refund_recovery(refund: Refund, *, lookups_done: int) -> Job | None:
    schedule = settings.PAYMENTS_RECOVERY_SCHEDULE_SECONDS
    if lookups_done >= len(schedule):
        return None
    return job_enqueue(
        func=RECOVER_REFUND_JOB,
        kwargs={"refund_id": refund.pk},
        queue="payments",
        concerns=refund.payment,
        run_at=timezone.now() + timedelta(seconds=schedule[lookups_done]),
    )


def refund_lookup_result_apply(*, refund_id: int, result: LookupResult) -> Refund:
    """Resolve an unknown refund from the gateway's lookup by its key: found -> succeeded or
    failed, not found -> failed (nothing was refunded; its amount is freed), still unclear ->
    look again later, and after the last scheduled look flag it for review (a manual settlement)."""
    with transaction.atomic():
        payment, refund = _refund_lock(refund_id)
        if refund.status != RefundStatus.UNKNOWN:
            return refund
        refund.lookups += 1
        if result.outcome in (GatewayOutcome.SUCCEEDED, GatewayOutcome.DECLINED):
            succeeded = result.outcome == GatewayOutcome.SUCCEEDED
            refund.error_code, refund.error_message = result.error_code, result.error_message
            refund_outcome_record(
                refund,
                payment,
                succeeded=succeeded,
                gateway_reference=result.gateway_reference,
                actor_label="recovery",
                reason="gateway lookup: refund succeeded"
                if succeeded
                else f"gateway lookup: declined {result.error_code}",
            )
        elif result.outcome == GatewayOutcome.NOT_FOUND:
            refund.error_code, refund.error_message = "not_found", "No refund under this key at the gateway."
            refund_outcome_record(
                refund,
                payment,
                succeeded=False,
                actor_label="recovery",
                reason="gateway lookup: no refund under this key, nothing was refunded",
            )
        else:
            if _schedule_refund_recovery(refund, lookups_done=refund.lookups) is None:
                refund.needs_review = True
            refund.save(update_fields=["lookups", "needs_review", "updated_at"])
    return refund


def refund_request_by_merchant(
    *, payment: Payment, amount_minor: int, reason: str, requested_by: Actor, request_key: str
) -> tuple[Refund, bool]:
    """A merchant's owner asks to refund one of the merchant's payments: the same locked checks,
    approval threshold (a large one waits for a staff approver) and request key as staff requests."""
    if not (
        isinstance(requested_by, User)
        and requested_by.pk
        and requested_by.is_active
        and payment.merchant.is_active
        and Membership.objects.filter(
            user=requested_by, merchant_id=payment.merchant_id, role=Membership.Role.OWNER
        ).exists()
    ):
        raise PaymentError("Only an owner of this merchant can request its refunds.", code="permission_denied")
    return _refund_create(
        payment=payment,
        amount_minor=amount_minor,
        reason=reason,
        requested_by=requested_by,
        request_key=request_key,
        audit_details={"via": "merchant portal"},
    )
