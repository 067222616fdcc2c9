"""Settling an unknown payment, or an unknown refund, by hand: one person asks (succeeded, with
the processor's reference, or failed), a second person approves or rejects; nothing changes
before. Every status change, of the request and of what it settles, is a django-fsm transition
through `status_transition`, so the payment's or refund's event and signal (ledger, webhooks) follow."""

from django.db import transaction
from django.utils import timezone

from backoffice.actors import Actor
from backoffice.services import audit_record
from payments.errors import PaymentError
from payments.models import Payment, Refund, SettlementRequest
from payments.services.common import lock_for_second_person, payment_lock, require_perm, status_transition, wrong_status
from payments.services.refunds import refund_outcome_record
from payments.states import AttemptOutcome, PaymentStatus, RefundStatus, SettlementStatus
from payments.validators import require_reason, require_request_key


def settlement_request(
    *,
    payment: Payment,
    settle_as: str,
    reason: str,
    requested_by: Actor,
    request_key: str,
    gateway_reference: str = "",
    refund: Refund | None = None,
) -> tuple[SettlementRequest, bool]:
    """Ask to settle an unknown payment as succeeded (with the processor's charge reference,
    which later refunds need) or failed, or, given `refund`, that unknown refund of it; nothing
    changes until a second person approves. The same request key again returns (the first request, False)."""
    requester = require_perm(requested_by, "payments.request_settlement", "ask for manual settlements")
    request_key = require_request_key(request_key)
    reason = require_reason(reason, "settle a payment by hand")
    if settle_as not in (PaymentStatus.SUCCEEDED, PaymentStatus.FAILED):
        raise PaymentError({"settle_as": ["Choose succeeded or failed."]}, code="settle_as")
    gateway_reference = (gateway_reference or "").strip()
    if settle_as == PaymentStatus.SUCCEEDED and not gateway_reference and refund is None:
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
        if refund is None:
            _check_payment_settleable(payment)
        else:
            refund = _check_refund_settleable(payment, refund)
        settlement = SettlementRequest.objects.create(
            payment=payment,
            refund=refund,
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
            details={"settle_as": settle_as, **({"refund": refund.public_id} if refund else {})},
        )
    return settlement, True


def _check_payment_settleable(payment: Payment) -> None:
    if payment.status != PaymentStatus.UNKNOWN:
        raise wrong_status(payment, "unknown")
    if payment.settlement_requests.filter(status=SettlementStatus.REQUESTED, refund__isnull=True).exists():
        raise PaymentError("already has a settlement awaiting approval", code="already_requested")


def _check_refund_settleable(payment: Payment, refund: Refund) -> Refund:
    refund = Refund.objects.select_for_update().get(pk=refund.pk)
    if refund.payment_id != payment.pk:
        raise PaymentError("This refund is not one of this payment's.", code="wrong_payment")
    if refund.status != RefundStatus.UNKNOWN:
        raise PaymentError(
            f"refund {refund.public_id} is not unknown (it is {refund.get_status_display().lower()})",
            code="wrong_status",
        )
    if refund.settlement_requests.filter(status=SettlementStatus.REQUESTED).exists():
        raise PaymentError(f"refund {refund.public_id} already has a settlement awaiting approval")
    return refund


def settlement_approve(*, settlement: SettlementRequest, approver: Actor, note: str = "") -> SettlementRequest:
    """A second person approves: the payment (or refund) moves from unknown to the requested
    outcome, with its event and signal; the request moves to approved."""
    with transaction.atomic():
        decider = require_perm(approver, "payments.approve_settlement", "approve manual settlements")
        settlement = lock_for_second_person(settlement, approver=decider)
        reason = f"settled by hand: {settlement.reason} (asked by {settlement.requested_by}, approved by {approver})"
        if settlement.refund is not None:
            settled_as = _settle_refund(settlement, settlement.refund, approver=approver, reason=reason)
        else:
            settled_as = _settle_payment(settlement, approver=approver, reason=reason)
        settlement.decided_by, settlement.decided_at, settlement.decision_note = decider, timezone.now(), note.strip()
        status_transition(settlement, "approve", actor=approver)
        audit_record(
            actor=approver,
            action="settlement_approve",
            target=settlement.payment,
            reason=note.strip(),
            details={
                "settled_as": settled_as,
                **({"refund": settlement.refund.public_id} if settlement.refund is not None else {}),
            },
        )
    return settlement


def _settle_payment(settlement: SettlementRequest, *, approver: Actor, reason: str) -> str:
    payment = settlement.payment
    if payment.status != PaymentStatus.UNKNOWN:
        raise wrong_status(payment, "unknown any more")
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
    return payment.status


def _settle_refund(settlement: SettlementRequest, refund: Refund, *, approver: Actor, reason: str) -> str:
    refund = Refund.objects.select_for_update().get(pk=refund.pk)
    if refund.status != RefundStatus.UNKNOWN:
        raise PaymentError(
            f"refund {refund.public_id} is not unknown any more (it is {refund.get_status_display().lower()})",
            code="wrong_status",
        )
    refund.payment = settlement.payment
    refund.error_message = "settled by hand"
    refund_outcome_record(
        refund,
        settlement.payment,
        succeeded=settlement.settle_as == PaymentStatus.SUCCEEDED,
        gateway_reference=settlement.gateway_reference,
        actor=approver,
        reason=reason,
    )
    settlement.refund = refund
    return refund.status


def settlement_reject(*, settlement: SettlementRequest, approver: Actor, note: str) -> SettlementRequest:
    """A second person rejects, with a required note; the payment (or refund) stays unknown."""
    note = require_reason(note, "reject a manual settlement")
    with transaction.atomic():
        decider = require_perm(approver, "payments.approve_settlement", "reject manual settlements")
        settlement = lock_for_second_person(settlement, approver=decider)
        settlement.decided_by, settlement.decided_at, settlement.decision_note = decider, timezone.now(), note
        status_transition(settlement, "reject", actor=approver)
        audit_record(actor=approver, action="settlement_reject", target=settlement.payment, reason=note)
    return settlement
