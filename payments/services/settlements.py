"""Settling an unknown payment by hand: one person asks (succeeded, with the processor's
charge reference, or failed), a second person approves or rejects; nothing changes before."""

from django.db import transaction
from django.utils import timezone

from backoffice.actors import Actor
from backoffice.services import audit_record
from payments.errors import PaymentError
from payments.models import Payment, SettlementRequest
from payments.services.common import lock_for_second_person, payment_lock, require_perm, status_transition, wrong_status
from payments.states import AttemptOutcome, PaymentStatus, SettlementStatus
from payments.validators import require_reason, require_request_key


def settlement_request(
    *,
    payment: Payment,
    settle_as: str,
    reason: str,
    requested_by: Actor,
    request_key: str,
    gateway_reference: str = "",
) -> tuple[SettlementRequest, bool]:
    """Ask to settle an unknown payment as succeeded (with the processor's charge reference,
    which later refunds need) or failed; nothing changes until a second person approves.
    The same request key again returns (the first request, False)."""
    requester = require_perm(requested_by, "payments.request_settlement", "ask for manual settlements")
    request_key = require_request_key(request_key)
    reason = require_reason(reason, "settle a payment by hand")
    if settle_as not in (PaymentStatus.SUCCEEDED, PaymentStatus.FAILED):
        raise PaymentError({"settle_as": ["Choose succeeded or failed."]}, code="settle_as")
    gateway_reference = (gateway_reference or "").strip()
    if settle_as == PaymentStatus.SUCCEEDED and not gateway_reference:
        raise PaymentError(
            {"gateway_reference": ["Give the processor's charge reference: refunds of this payment need it."]},
            code="reference_required",
        )
    if len(gateway_reference) > 100:
        raise PaymentError({"gateway_reference": ["The reference is longer than 100 characters."]})
    with transaction.atomic():
        payment = payment_lock(payment.pk)
        earlier = payment.settlement_requests.filter(request_key=request_key).first()
        if earlier is not None:
            return earlier, False
        if payment.status != PaymentStatus.UNKNOWN:
            raise wrong_status(payment, "unknown")
        if payment.settlement_requests.filter(status=SettlementStatus.REQUESTED).exists():
            raise PaymentError("already has a settlement awaiting approval", code="already_requested")
        settlement = SettlementRequest.objects.create(
            payment=payment,
            settle_as=settle_as,
            reason=reason,
            requested_by=requester,
            request_key=request_key,
            gateway_reference=gateway_reference if settle_as == PaymentStatus.SUCCEEDED else "",
        )
        audit_record(
            actor=requested_by,
            action="settlement_request",
            target=payment,
            reason=reason,
            details={"settle_as": settle_as},
        )
    return settlement, True


def settlement_approve(*, settlement: SettlementRequest, approver: Actor, note: str = "") -> SettlementRequest:
    """A second person approves: the payment moves from unknown to the requested outcome."""
    with transaction.atomic():
        decider = require_perm(approver, "payments.approve_settlement", "approve manual settlements")
        settlement = lock_for_second_person(settlement, approver=decider)
        payment = settlement.payment
        if payment.status != PaymentStatus.UNKNOWN:
            raise wrong_status(payment, "unknown any more")
        reason = f"settled by hand: {settlement.reason} (asked by {settlement.requested_by}, approved by {approver})"
        # The attempts stop being unknown too: a later refund needs the charge reference, and
        # a retry must not find an attempt nobody reconciled.
        for attempt in payment.attempts.filter(outcome=AttemptOutcome.UNKNOWN):
            if settlement.settle_as == PaymentStatus.SUCCEEDED:
                attempt.outcome, attempt.gateway_reference = AttemptOutcome.SUCCEEDED, settlement.gateway_reference
            else:
                attempt.outcome = AttemptOutcome.NOT_FOUND
            attempt.error_message = "settled by hand"
            attempt.completed_at = attempt.completed_at or timezone.now()
            attempt.save()
        status_transition(
            payment,
            "succeed" if settlement.settle_as == PaymentStatus.SUCCEEDED else "fail",
            actor=approver,
            reason=reason,
        )
        settlement.status, settlement.decided_by = SettlementStatus.APPROVED, decider
        settlement.decided_at, settlement.decision_note = timezone.now(), note.strip()
        settlement.save()
        audit_record(
            actor=approver,
            action="settlement_approve",
            target=payment,
            reason=note.strip(),
            details={"settled_as": payment.status},
        )
    return settlement


def settlement_reject(*, settlement: SettlementRequest, approver: Actor, note: str) -> SettlementRequest:
    """A second person rejects, with a required note; the payment stays unknown."""
    note = require_reason(note, "reject a manual settlement")
    with transaction.atomic():
        decider = require_perm(approver, "payments.approve_settlement", "reject manual settlements")
        settlement = lock_for_second_person(settlement, approver=decider)
        settlement.status, settlement.decided_by = SettlementStatus.REJECTED, decider
        settlement.decided_at, settlement.decision_note = timezone.now(), note
        settlement.save()
        audit_record(actor=approver, action="settlement_reject", target=settlement.payment, reason=note)
    return settlement
