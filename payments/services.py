"""Every write that matters to a payment. Each service runs in one short transaction,
locks the payment row, transitions, writes the PaymentEvent and sends
`payment_status_changed`; gateway calls happen in jobs, outside any lock."""

import re
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from backoffice.models import Job, JobStatus
from backoffice.services import audit_record, job_enqueue
from payments.gateways import ChargeResult, GatewayOutcome, LookupResult
from payments.models import Merchant, Payment, PaymentAttempt, PaymentEvent
from payments.money import format_minor, validate_currency
from payments.signals import payment_status_changed
from payments.states import AttemptOutcome, PaymentStatus

PROCESS_JOB = "payments.jobs.process_payment"
RECOVER_JOB = "payments.jobs.recover_payment"
ACTIVE_JOB_STATUSES = (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.RETRYING)
TOKEN_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{2,63}$")
CARD_NUMBER_PATTERN = re.compile(r"\d[\d -]{10,}\d")


class PaymentError(ValidationError):
    """A refused operation on a payment; its message is fit to show the user."""


# --- creating -----------------------------------------------------------------------------

def _validate_new_payment(*, merchant, amount_minor, currency, payment_method, idempotency_key,
                          merchant_reference, customer_email, description) -> None:
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
    if CARD_NUMBER_PATTERN.search(payment_method or ""):
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
        merchant=merchant, amount_minor=amount_minor, currency=currency, payment_method=payment_method,
        idempotency_key=idempotency_key, merchant_reference=merchant_reference,
        customer_email=customer_email, description=description,
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
            {"idempotency_key": [
                f"This idempotency key was already used for payment {existing.public_id} with a "
                f"different {', '.join(differing)}."
            ]}
        )
    return existing


# --- transitions ----------------------------------------------------------------------------

def _record_event(payment: Payment, *, from_status: str, actor=None, actor_label: str = "", reason: str = ""):
    event = PaymentEvent.objects.create(
        payment=payment,
        from_status=from_status,
        to_status=payment.status,
        actor=actor if getattr(actor, "pk", None) else None,
        actor_label=actor_label or ("" if getattr(actor, "pk", None) else "system"),
        reason=reason,
    )
    payment_status_changed.send(
        sender=Payment, payment=payment, event=event, from_status=from_status, to_status=payment.status
    )
    return event


def _transition(payment: Payment, name: str, *, actor=None, actor_label: str = "", reason: str = "") -> None:
    """Run a transition on a locked payment, save it, and record the event and signal."""
    from_status = payment.status
    getattr(payment, name)()
    payment.save()
    _record_event(payment, from_status=from_status, actor=actor, actor_label=actor_label, reason=reason)


def _locked(payment_id: int) -> Payment:
    return Payment.objects.select_for_update().get(pk=payment_id)


def _enqueue_processing(payment: Payment, *, actor=None) -> Job:
    return job_enqueue(
        func=PROCESS_JOB, kwargs={"payment_id": payment.pk}, queue="payments",
        concerns=payment, requested_by=actor,
    )


def _refuse(payment: Payment, expected: str) -> PaymentError:
    return PaymentError(f"not {expected} (it is {payment.get_status_display().lower()})", code="wrong_status")


def payment_active_jobs(payment: Payment, func: str = PROCESS_JOB):
    return Job.objects.filter(
        content_type__app_label="payments", content_type__model="payment", object_id=str(payment.pk),
        func=func, status__in=ACTIVE_JOB_STATUSES,
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
            _transition(payment, "mark_unknown", actor_label="worker",
                        reason=f"no clear answer from the gateway: {result.error_code}")
            _schedule_recovery(payment, lookups_done=0)
        attempt.save()
    return payment


def _schedule_recovery(payment: Payment, *, lookups_done: int) -> Job | None:
    schedule = settings.PAYMENTS_RECOVERY_SCHEDULE_SECONDS
    if lookups_done >= len(schedule):
        return None
    return job_enqueue(
        func=RECOVER_JOB, kwargs={"payment_id": payment.pk}, queue="payments", concerns=payment,
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
            _transition(payment, "fail", actor_label="recovery",
                        reason="gateway lookup: no charge under this attempt's key, nothing was taken")
        elif _schedule_recovery(payment, lookups_done=attempt.lookups) is None:
            payment.needs_review = True
            payment.save(update_fields=["needs_review", "updated_at"])
        attempt.save()
    return payment


def payment_resolve_unknown(*, payment: Payment, succeeded: bool, actor, reason: str) -> Payment:
    """Settle an unknown payment by hand after checking with the processor (reason required)."""
    if not reason.strip():
        raise PaymentError("A reason is required to resolve a payment by hand.", code="reason_required")
    with transaction.atomic():
        payment = _locked(payment.pk)
        if payment.status != PaymentStatus.UNKNOWN:
            raise _refuse(payment, "unknown")
        _transition(payment, "succeed" if succeeded else "fail", actor=actor, reason=reason)
        audit_record(actor=actor, action="payment_resolve", target=payment, reason=reason,
                     details={"resolved_to": payment.status})
    return payment


def payment_summary(payment: Payment) -> str:
    return f"{payment.public_id} {format_minor(payment.amount_minor, payment.currency)} {payment.status}"
