"""Every write that matters to a payment. Each service runs in one short transaction,
locks the payment row, transitions, writes the PaymentEvent and sends
`payment_status_changed`; gateway calls happen in jobs, outside any lock."""

import re
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from backoffice.models import Job, JobStatus
from backoffice.services import audit_record, job_enqueue
from payments.gateways import ChargeResult, GatewayOutcome, LookupResult, RefundResult
from payments.models import (
    Membership,
    Merchant,
    Payment,
    PaymentAttempt,
    PaymentEvent,
    Refund,
    RefundEvent,
    ResolutionRequest,
)
from payments.money import format_minor, major_to_minor, validate_currency
from payments.signals import payment_status_changed, refund_status_changed
from payments.states import REFUND_HOLDING, AttemptOutcome, PaymentStatus, RefundStatus, ResolutionStatus

PROCESS_JOB = "payments.jobs.process_payment"
RECOVER_JOB = "payments.jobs.recover_payment"
REFUND_JOB = "payments.jobs.refund_payment"
ACTIVE_JOB_STATUSES = (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.RETRYING)
TOKEN_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{2,63}$")
# A run of 13 to 19 digits, possibly grouped by spaces, dashes, dots or underscores.
DIGIT_RUN = re.compile(r"(?<!\d)\d(?:[ ._-]?\d){12,18}(?![ ._-]?\d)")


def contains_card_number(text: str) -> bool:
    """True if the text holds something that passes for a card number (Luhn-valid 13-19
    digits): such text is refused, never stored, never echoed back."""
    for run in DIGIT_RUN.finditer(text or ""):
        digits = [int(char) for char in run.group() if char.isdigit()]
        if _luhn_valid(digits):
            return True
    return False


def _luhn_valid(digits: list[int]) -> bool:
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


class PaymentError(ValidationError):
    """A refused operation on a payment; its message is fit to show the user."""


# --- creating -----------------------------------------------------------------------------


def _validate_new_payment(
    *,
    merchant,
    amount_minor,
    currency,
    payment_method,
    idempotency_key,
    merchant_reference,
    customer_email,
    description,
) -> None:
    errors: dict[str, list[str]] = {}

    def refuse(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    if not merchant.is_active:
        refuse("merchant", f"Merchant {merchant} is not active.")
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        refuse("amount_minor", "The amount must be a whole number of minor units.")
    elif amount_minor <= 0:
        refuse("amount_minor", "The amount must be greater than zero.")
    elif amount_minor > settings.PAYMENTS_MAX_AMOUNT_MINOR:
        refuse("amount_minor", f"The amount is above the maximum of {settings.PAYMENTS_MAX_AMOUNT_MINOR} minor units.")
    try:
        validate_currency(currency)
    except ValidationError as error:
        refuse("currency", error.messages[0])
    if contains_card_number(payment_method):
        refuse("payment_method", "Card numbers are never accepted: send a payment method token.")
    elif not TOKEN_PATTERN.match(payment_method or ""):
        refuse("payment_method", "Enter a payment method token such as tok_success.")
    if not idempotency_key or len(idempotency_key) > 100:
        refuse("idempotency_key", "An idempotency key of 1 to 100 characters is required.")
    if len(merchant_reference) > 100:
        refuse("merchant_reference", "The reference is longer than 100 characters.")
    if len(description) > 255:
        refuse("description", "The description is longer than 255 characters.")
    if customer_email:
        try:
            validate_email(customer_email)
        except ValidationError:
            refuse("customer_email", "Enter a valid e-mail address.")
    for field, value in (
        ("merchant_reference", merchant_reference),
        ("description", description),
        ("customer_email", customer_email),
    ):
        if contains_card_number(value):
            refuse(field, "This looks like a card number; card numbers are never accepted or stored.")
    if errors:
        raise PaymentError(errors)


def payment_create(
    *,
    merchant: Merchant,
    amount_minor: int,
    currency: str,
    payment_method: str,
    idempotency_key: str,
    merchant_reference: str = "",
    customer_email: str = "",
    description: str = "",
    actor=None,
) -> Payment:
    """Create a pending payment and queue its processing, in one transaction. The same
    idempotency key with the same parameters returns the first payment; with others it is refused."""
    _validate_new_payment(
        merchant=merchant,
        amount_minor=amount_minor,
        currency=currency,
        payment_method=payment_method,
        idempotency_key=idempotency_key,
        merchant_reference=merchant_reference,
        customer_email=customer_email,
        description=description,
    )
    params = {
        "amount_minor": amount_minor,
        "currency": currency,
        "payment_method": payment_method,
        "merchant_reference": merchant_reference,
        "customer_email": customer_email,
        "description": description,
    }
    with transaction.atomic():
        existing = Payment.objects.filter(merchant=merchant, idempotency_key=idempotency_key).first()
        if existing is None:
            try:
                with transaction.atomic():
                    payment = Payment.objects.create(
                        merchant=merchant,
                        idempotency_key=idempotency_key,
                        created_by=actor if getattr(actor, "pk", None) else None,
                        **params,
                    )
            except IntegrityError:  # the same key created at the same moment by another request
                existing = Payment.objects.get(merchant=merchant, idempotency_key=idempotency_key)
            else:
                _record_event(payment, from_status="", actor=actor, reason="created")
                _enqueue_processing(payment, actor=actor)
                return payment
    differing = sorted(name for name, value in params.items() if getattr(existing, name) != value)
    if differing:
        raise PaymentError(
            {
                "idempotency_key": [
                    f"This idempotency key was already used for payment {existing.public_id} with a "
                    f"different {', '.join(differing)}."
                ]
            }
        )
    return existing


# --- transitions ----------------------------------------------------------------------------


def _record_event(subject: Payment | Refund, *, from_status: str, actor=None, actor_label: str = "", reason: str = ""):
    """Append the subject's event (PaymentEvent or RefundEvent) and send its status signal."""
    event_model, name, signal = {
        Payment: (PaymentEvent, "payment", payment_status_changed),
        Refund: (RefundEvent, "refund", refund_status_changed),
    }[type(subject)]
    user = actor if getattr(actor, "pk", None) else None
    event = event_model.objects.create(
        **{name: subject},
        from_status=from_status,
        to_status=subject.status,
        actor=user,
        actor_label=actor_label or ("" if user else "system"),
        reason=reason,
    )
    signal.send(sender=type(subject), **{name: subject}, event=event, from_status=from_status, to_status=subject.status)
    return event


def _transition(subject: Payment | Refund, name: str, *, actor=None, actor_label: str = "", reason: str = "") -> None:
    """Run a transition on a locked payment or refund, save it, and record the event and signal."""
    from_status = subject.status
    getattr(subject, name)()
    subject.save()
    _record_event(subject, from_status=from_status, actor=actor, actor_label=actor_label, reason=reason)


def _locked(payment_id: int) -> Payment:
    # The merchant comes along (notifications read it on every change) but is not locked:
    # locking it would serialise all of a merchant's payments.
    return Payment.objects.select_for_update(of=("self",)).select_related("merchant").get(pk=payment_id)


def _enqueue_processing(payment: Payment, *, actor=None) -> Job:
    return job_enqueue(
        func=PROCESS_JOB,
        kwargs={"payment_id": payment.pk},
        queue="payments",
        concerns=payment,
        requested_by=actor,
    )


def _refuse(payment: Payment, expected: str) -> PaymentError:
    return PaymentError(f"not {expected} (it is {payment.get_status_display().lower()})", code="wrong_status")


def payment_active_jobs(payment: Payment, func: str = PROCESS_JOB):
    return Job.objects.filter(
        content_type__app_label="payments",
        content_type__model="payment",
        object_id=str(payment.pk),
        func=func,
        status__in=ACTIVE_JOB_STATUSES,
    )


def payment_process_now(*, payment: Payment, actor, reason: str = "") -> Job:
    """Queue processing of a pending payment that has no live processing job (its job
    failed, was canceled, or was lost)."""
    with transaction.atomic():
        payment = _locked(payment.pk)
        if payment.status != PaymentStatus.PENDING:
            raise _refuse(payment, "pending")
        if payment_active_jobs(payment).exists():
            raise PaymentError("already queued", code="already_queued")
        audit_record(actor=actor, action="payment_process", target=payment, reason=reason)
        return _enqueue_processing(payment, actor=actor)


def payment_retry(*, payment: Payment, actor, reason: str = "") -> Payment:
    """Move a failed payment back to pending and queue a new attempt (a new idempotency key)."""
    with transaction.atomic():
        payment = _locked(payment.pk)
        if payment.status != PaymentStatus.FAILED:
            raise _refuse(payment, "failed")
        _transition(payment, "retry", actor=actor, reason=reason or "retry")
        audit_record(actor=actor, action="payment_retry", target=payment, reason=reason)
        _enqueue_processing(payment, actor=actor)
    return payment


def payment_cancel(*, payment: Payment, actor, reason: str = "") -> Payment:
    """Cancel a pending payment; its queued processing job then finds nothing to do."""
    with transaction.atomic():
        payment = _locked(payment.pk)
        if payment.status != PaymentStatus.PENDING:
            raise _refuse(payment, "pending")
        _transition(payment, "cancel", actor=actor, reason=reason or "canceled")
        audit_record(actor=actor, action="payment_cancel", target=payment, reason=reason)
    return payment


# --- processing (called by jobs) ----------------------------------------------------------


def payment_processing_start(*, payment_id: int) -> PaymentAttempt | None:
    """Lock the payment and return the attempt to send to the gateway: a new one for a
    pending payment, or the open one of a payment whose previous run died mid-call (same
    idempotency key, so the gateway cannot charge twice). None when there is nothing to do."""
    with transaction.atomic():
        payment = _locked(payment_id)
        if payment.status == PaymentStatus.PROCESSING:
            return payment.attempts.filter(outcome=AttemptOutcome.PENDING).order_by("-number").first()
        if payment.status != PaymentStatus.PENDING:
            return None
        _transition(payment, "start_processing", actor_label="worker")
        number = payment.attempts.count() + 1
        return PaymentAttempt.objects.create(
            payment=payment, number=number, idempotency_key=f"{payment.public_id}_a{number}"
        )


def payment_charge_result_apply(*, attempt_id: int, result: ChargeResult) -> Payment:
    """Record the gateway's answer on the attempt and move the payment; an answer already
    applied (a duplicate run) changes nothing. Unknown answers schedule the recovery job."""
    with transaction.atomic():
        attempt = PaymentAttempt.objects.select_related("payment").get(pk=attempt_id)
        payment = _locked(attempt.payment_id)
        attempt.refresh_from_db()
        if attempt.outcome != AttemptOutcome.PENDING or payment.status != PaymentStatus.PROCESSING:
            return payment
        attempt.gateway_reference = result.gateway_reference
        attempt.error_code = result.error_code
        attempt.error_message = result.error_message
        attempt.latency_ms = result.latency_ms
        attempt.completed_at = timezone.now()
        if result.outcome == GatewayOutcome.SUCCEEDED:
            attempt.outcome = AttemptOutcome.SUCCEEDED
            _transition(payment, "succeed", actor_label="worker", reason="approved by the gateway")
        elif result.outcome == GatewayOutcome.DECLINED:
            attempt.outcome = AttemptOutcome.DECLINED
            _transition(payment, "fail", actor_label="worker", reason=f"declined: {result.error_code}")
        else:
            attempt.outcome = AttemptOutcome.UNKNOWN
            _transition(
                payment,
                "mark_unknown",
                actor_label="worker",
                reason=f"no clear answer from the gateway: {result.error_code}",
            )
            _schedule_recovery(payment, lookups_done=0)
        attempt.save()
    return payment


def _schedule_recovery(payment: Payment, *, lookups_done: int) -> Job | None:
    schedule = settings.PAYMENTS_RECOVERY_SCHEDULE_SECONDS
    if lookups_done >= len(schedule):
        return None
    return job_enqueue(
        func=RECOVER_JOB,
        kwargs={"payment_id": payment.pk},
        queue="payments",
        concerns=payment,
        run_at=timezone.now() + timedelta(seconds=schedule[lookups_done]),
    )


def payment_unknown_attempt(*, payment_id: int) -> PaymentAttempt | None:
    """The attempt whose outcome the recovery job must look up, if the payment is still unknown."""
    payment = Payment.objects.get(pk=payment_id)
    if payment.status != PaymentStatus.UNKNOWN:
        return None
    return payment.attempts.filter(outcome=AttemptOutcome.UNKNOWN).order_by("-number").first()


def payment_lookup_result_apply(*, attempt_id: int, result: LookupResult) -> Payment:
    """Resolve an unknown payment from the gateway's lookup: found -> succeeded or failed,
    not found -> failed (it never happened), still unclear -> look again later, and after
    the last scheduled look flag it for review."""
    with transaction.atomic():
        attempt = PaymentAttempt.objects.get(pk=attempt_id)
        payment = _locked(attempt.payment_id)
        attempt.refresh_from_db()
        if payment.status != PaymentStatus.UNKNOWN or attempt.outcome != AttemptOutcome.UNKNOWN:
            return payment
        attempt.lookups += 1
        if result.outcome == GatewayOutcome.SUCCEEDED:
            attempt.outcome, attempt.gateway_reference = AttemptOutcome.SUCCEEDED, result.gateway_reference
            attempt.error_code = attempt.error_message = ""
            _transition(payment, "succeed", actor_label="recovery", reason="gateway lookup: charge succeeded")
        elif result.outcome == GatewayOutcome.DECLINED:
            attempt.outcome, attempt.error_code = AttemptOutcome.DECLINED, result.error_code
            attempt.error_message = result.error_message
            _transition(payment, "fail", actor_label="recovery", reason=f"gateway lookup: declined {result.error_code}")
        elif result.outcome == GatewayOutcome.NOT_FOUND:
            attempt.outcome = AttemptOutcome.NOT_FOUND
            _transition(
                payment,
                "fail",
                actor_label="recovery",
                reason="gateway lookup: no charge under this attempt's key, nothing was taken",
            )
        elif _schedule_recovery(payment, lookups_done=attempt.lookups) is None:
            payment.needs_review = True
            payment.save(update_fields=["needs_review", "updated_at"])
        attempt.save()
    return payment


def payment_summary(payment: Payment) -> str:
    return f"{payment.public_id} {format_minor(payment.amount_minor, payment.currency)} {payment.status}"


# --- refunds ----------------------------------------------------------------------------------


def _require_reason(reason: str, what: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise PaymentError({"reason": [f"A reason is required to {what}."]}, code="reason_required")
    return reason


def _require_perm(user, perm: str, what: str) -> None:
    if not (getattr(user, "pk", None) and user.is_active and user.has_perm(perm)):
        raise PaymentError(f"You do not have permission to {what}.", code="permission_denied")


def refund_remaining_minor(payment: Payment) -> int:
    """What can still be refunded: the captured amount less every refund not failed or rejected."""
    if not payment.is_captured():
        return 0
    held = payment.refunds.filter(status__in=REFUND_HOLDING).aggregate(total=Sum("amount_minor"))["total"] or 0
    return max(payment.amount_minor - held, 0)


def refund_approval_threshold_minor(currency: str) -> int:
    thresholds = settings.PAYMENTS_REFUND_APPROVAL_THRESHOLD
    return major_to_minor(thresholds.get(currency, thresholds.get("default", "0")), currency)


def _enqueue_refund(refund: Refund, *, actor=None) -> Job:
    return job_enqueue(
        func=REFUND_JOB,
        kwargs={"refund_id": refund.pk},
        queue="payments",
        concerns=refund.payment,
        requested_by=actor,
    )


def refund_request(*, payment: Payment, amount_minor: int, reason: str, requested_by) -> Refund:
    """Lock the payment, check the refund fits in what remains refundable (so concurrent
    requests can never together exceed the capture), create it; below the approval
    threshold approve it at once and queue the refund job."""
    _require_perm(requested_by, "payments.request_refund", "request refunds")
    return _refund_create(payment=payment, amount_minor=amount_minor, reason=reason, requested_by=requested_by)


def _refund_create(*, payment: Payment, amount_minor: int, reason: str, requested_by, audit_details=None) -> Refund:
    """The checks and writes every refund request shares, once its requester is authorised."""
    reason = _require_reason(reason, "refund")
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise PaymentError({"amount_minor": ["The refund amount must be a whole number of minor units."]})
    with transaction.atomic():
        payment = _locked(payment.pk)
        if payment.status == PaymentStatus.UNKNOWN:
            raise PaymentError("not refundable until its outcome is resolved (it is unknown)", code="wrong_status")
        if not payment.is_captured() or payment.status == PaymentStatus.REFUNDED:
            raise _refuse(payment, "refundable")
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
        )
        _record_event(refund, from_status="", actor=requested_by, reason=reason)
        audit_record(
            actor=requested_by,
            action="refund_request",
            target=payment,
            reason=reason,
            details={"refund": refund.public_id, "amount_minor": amount_minor, **(audit_details or {})},
        )
        if not needs_approval:
            refund.decided_at = timezone.now()
            _transition(
                refund, "approve", actor_label="system", reason="below the approval threshold: approved automatically"
            )
            _enqueue_refund(refund, actor=requested_by)
    return refund


def _locked_for_second_person(subject: Refund | ResolutionRequest, *, approver, perm: str, what: str):
    """Lock the payment, then the refund or settlement request awaiting a decision, and check
    the decider may decide it: the permission, not the requester (four eyes), still open."""
    _require_perm(approver, perm, what)
    payment = _locked(subject.payment_id)
    subject = type(subject).objects.select_for_update().get(pk=subject.pk)
    subject.payment = payment
    kind = "refund" if isinstance(subject, Refund) else "manual settlement"
    if subject.requested_by_id == approver.pk:
        raise PaymentError(f"A {kind} needs a second person: you asked for this one.", code="four_eyes")
    if subject.status != "requested":
        raise PaymentError(f"not awaiting approval (it is {subject.get_status_display().lower()})", code="wrong_status")
    return subject


def refund_approve(*, refund: Refund, approver, note: str = "") -> Refund:
    """A second person with approve_refund approves; locks payment and refund, queues the refund job."""
    with transaction.atomic():
        refund = _locked_for_second_person(
            refund, approver=approver, perm="payments.approve_refund", what="approve refunds"
        )
        refund.approved_by, refund.decided_at, refund.decision_note = approver, timezone.now(), note.strip()
        _transition(refund, "approve", actor=approver, reason=note.strip() or "approved")
        audit_record(
            actor=approver,
            action="refund_approve",
            target=refund.payment,
            reason=note.strip(),
            details={"refund": refund.public_id},
        )
        _enqueue_refund(refund, actor=approver)
    return refund


def refund_reject(*, refund: Refund, approver, note: str) -> Refund:
    """A second person with approve_refund rejects, with a required note; the amount is freed."""
    note = _require_reason(note, "reject a refund")
    with transaction.atomic():
        refund = _locked_for_second_person(
            refund, approver=approver, perm="payments.approve_refund", what="reject refunds"
        )
        refund.rejected_by, refund.decided_at, refund.decision_note = approver, timezone.now(), note
        _transition(refund, "reject", actor=approver, reason=note)
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
            _transition(refund, "start_processing", actor_label="worker")
        elif refund.status != RefundStatus.PROCESSING:
            return None
        return refund


def refund_charge_reference(refund: Refund) -> str:
    attempt = refund.payment.attempts.filter(outcome=AttemptOutcome.SUCCEEDED).first()
    return attempt.gateway_reference if attempt else ""


class RefundOutcomeUnknown(Exception):
    """The gateway gave no clear answer; the job retries under the same idempotency key."""


def refund_result_apply(*, refund_id: int, result: RefundResult) -> Refund:
    """Record the gateway's answer: succeeded moves the payment to partially refunded or
    refunded; declined fails the refund and frees its amount. Applied once."""
    if result.outcome == GatewayOutcome.UNKNOWN:
        raise RefundOutcomeUnknown(f"{result.error_code}: {result.error_message}")
    with transaction.atomic():
        refund = Refund.objects.get(pk=refund_id)
        payment = _locked(refund.payment_id)
        refund = Refund.objects.select_for_update().get(pk=refund_id)
        if refund.status != RefundStatus.PROCESSING:
            return refund
        refund.gateway_reference = result.gateway_reference
        refund.error_code, refund.error_message = result.error_code, result.error_message
        refund.completed_at = timezone.now()
        if result.outcome != GatewayOutcome.SUCCEEDED:
            _transition(refund, "fail", actor_label="worker", reason=f"declined: {result.error_code}")
            return refund
        _transition(refund, "succeed", actor_label="worker", reason="refunded by the gateway")
        refunded = payment.refunds.filter(status=RefundStatus.SUCCEEDED).aggregate(total=Sum("amount_minor"))["total"]
        _transition(
            payment,
            "refund_fully" if refunded >= payment.amount_minor else "refund_partially",
            actor_label="worker",
            reason=f"refund {refund.public_id} of {refund.amount_display} succeeded",
        )
    return refund


# --- settling unknown payments by hand ------------------------------------------------------


def resolution_request(
    *, payment: Payment, resolve_to: str, reason: str, requested_by, gateway_reference: str = ""
) -> ResolutionRequest:
    """Ask to settle an unknown payment as succeeded (with the processor's charge reference,
    which later refunds need) or failed; nothing changes until a second person approves."""
    _require_perm(requested_by, "payments.request_resolution", "ask for manual settlements")
    reason = _require_reason(reason, "settle a payment by hand")
    if resolve_to not in (PaymentStatus.SUCCEEDED, PaymentStatus.FAILED):
        raise PaymentError({"resolve_to": ["Choose succeeded or failed."]}, code="resolve_to")
    gateway_reference = (gateway_reference or "").strip()
    if resolve_to == PaymentStatus.SUCCEEDED and not gateway_reference:
        raise PaymentError(
            {"gateway_reference": ["Give the processor's charge reference: refunds of this payment need it."]},
            code="reference_required",
        )
    if len(gateway_reference) > 100:
        raise PaymentError({"gateway_reference": ["The reference is longer than 100 characters."]})
    with transaction.atomic():
        payment = _locked(payment.pk)
        if payment.status != PaymentStatus.UNKNOWN:
            raise _refuse(payment, "unknown")
        if payment.resolution_requests.filter(status=ResolutionStatus.REQUESTED).exists():
            raise PaymentError("already has a settlement awaiting approval", code="already_requested")
        request = ResolutionRequest.objects.create(
            payment=payment,
            resolve_to=resolve_to,
            reason=reason,
            requested_by=requested_by,
            gateway_reference=gateway_reference if resolve_to == PaymentStatus.SUCCEEDED else "",
        )
        audit_record(
            actor=requested_by,
            action="resolution_request",
            target=payment,
            reason=reason,
            details={"resolve_to": resolve_to},
        )
    return request


def resolution_approve(*, request: ResolutionRequest, approver, note: str = "") -> ResolutionRequest:
    """A second person approves: the payment moves from unknown to the requested outcome."""
    with transaction.atomic():
        request = _locked_for_second_person(
            request, approver=approver, perm="payments.approve_resolution", what="approve manual settlements"
        )
        payment = request.payment
        if payment.status != PaymentStatus.UNKNOWN:
            raise _refuse(payment, "unknown any more")
        reason = f"settled by hand: {request.reason} (asked by {request.requested_by}, approved by {approver})"
        # The attempts stop being unknown too: a later refund needs the charge reference, and
        # a retry must not find an attempt nobody reconciled.
        for attempt in payment.attempts.filter(outcome=AttemptOutcome.UNKNOWN):
            if request.resolve_to == PaymentStatus.SUCCEEDED:
                attempt.outcome, attempt.gateway_reference = AttemptOutcome.SUCCEEDED, request.gateway_reference
            else:
                attempt.outcome = AttemptOutcome.NOT_FOUND
            attempt.error_message = "settled by hand"
            attempt.completed_at = attempt.completed_at or timezone.now()
            attempt.save()
        _transition(
            payment,
            "succeed" if request.resolve_to == PaymentStatus.SUCCEEDED else "fail",
            actor=approver,
            reason=reason,
        )
        request.status, request.decided_by = ResolutionStatus.APPROVED, approver
        request.decided_at, request.decision_note = timezone.now(), note.strip()
        request.save()
        audit_record(
            actor=approver,
            action="resolution_approve",
            target=payment,
            reason=note.strip(),
            details={"resolved_to": payment.status},
        )
    return request


def resolution_reject(*, request: ResolutionRequest, approver, note: str) -> ResolutionRequest:
    """A second person rejects, with a required note; the payment stays unknown."""
    note = _require_reason(note, "reject a manual settlement")
    with transaction.atomic():
        request = _locked_for_second_person(
            request, approver=approver, perm="payments.approve_resolution", what="reject manual settlements"
        )
        request.status, request.decided_by = ResolutionStatus.REJECTED, approver
        request.decided_at, request.decision_note = timezone.now(), note
        request.save()
        audit_record(actor=approver, action="resolution_reject", target=request.payment, reason=note)
    return request


# --- the merchant portal ---------------------------------------------------------------------


def refund_request_by_merchant(*, payment: Payment, amount_minor: int, reason: str, requested_by) -> Refund:
    """A merchant's owner asks to refund one of the merchant's payments: the same locked checks
    and approval threshold as staff requests (a large one waits for a staff approver)."""
    allowed = (
        getattr(requested_by, "pk", None)
        and requested_by.is_active
        and payment.merchant.is_active
        and Membership.objects.filter(
            user=requested_by, merchant_id=payment.merchant_id, role=Membership.Role.OWNER
        ).exists()
    )
    if not allowed:
        raise PaymentError("Only an owner of this merchant can request its refunds.", code="permission_denied")
    return _refund_create(
        payment=payment,
        amount_minor=amount_minor,
        reason=reason,
        requested_by=requested_by,
        audit_details={"via": "merchant portal"},
    )
