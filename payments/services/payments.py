"""Payment services: create, process now, retry, cancel, and apply what the gateway says.
Each runs in one short transaction, locks the payment row, transitions, writes the
PaymentEvent and sends `payment_status_changed`; gateway calls happen in jobs, outside any lock."""

from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from backoffice.actors import Actor, actor_user
from backoffice.db import insert_rows
from backoffice.models import Job
from backoffice.services import audit_record, job_enqueue, job_enqueue_many
from payments.errors import PaymentError
from payments.gateways import ChargeResult, GatewayOutcome, LookupResult
from payments.models import Merchant, Payment, PaymentAttempt, PaymentEvent, new_public_id
from payments.selectors import payment_active_jobs
from payments.services.common import event_record, payment_lock, status_transition, wrong_status
from payments.signals import payment_status_changed
from payments.states import AttemptOutcome, PaymentStatus
from payments.validators import validate_new_payment

PROCESS_JOB = "payments.jobs.process_payment"
RECOVER_JOB = "payments.jobs.recover_payment"


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
    actor: Actor = None,
) -> tuple[Payment, bool]:
    """Create a pending payment and queue its processing, in one transaction; (payment, True).
    The same idempotency key (unique per merchant in the database) with the same parameters
    returns (the first payment, False); with others it is refused."""
    validate_new_payment(
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
                        created_by=actor_user(actor),
                        **params,
                    )
            except IntegrityError:  # the same key created at the same moment by another request
                existing = Payment.objects.get(merchant=merchant, idempotency_key=idempotency_key)
            else:
                event_record(payment, from_status="", actor=actor, reason="created")
                payment_enqueue_processing(payment, actor=actor)
                return payment, True
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
    return existing, False


# What each item of payments_create_many carries (payment_create's parameters but the merchant).
NEW_PAYMENT_FIELDS = (
    "amount_minor",
    "currency",
    "payment_method",
    "idempotency_key",
    "merchant_reference",
    "customer_email",
    "description",
)


def payments_create_many(*, merchant: Merchant, items: list[dict], actor: Actor = None) -> list[Payment]:
    """payment_create for many payments of one merchant, with bulk writes: every item checked
    first (one bad item refuses them all, nothing written: PaymentError keyed `item N: field`),
    then in one transaction one INSERT of payments, one of their events, one of their jobs,
    each payment's signal, and once committed one Redis pipeline for the pushes. An
    idempotency key already used with the same details returns that payment, with other
    details it is refused, as payment_create does. Returns the payments in the items' order."""
    items = [_new_payment(item) for item in items]
    _validate_many(merchant, items)
    keys = [item["idempotency_key"] for item in items]
    try:
        with transaction.atomic():
            existing = {
                p.idempotency_key: p for p in Payment.objects.filter(merchant=merchant, idempotency_key__in=keys)
            }
            _refuse_reused_keys(items, existing)
            fresh = [item for item in items if item["idempotency_key"] not in existing]
            created = {payment.idempotency_key: payment for payment in _insert_payments(merchant, fresh, actor)}
    except IntegrityError as error:  # a key taken by another request at the same moment: all or nothing
        raise PaymentError(
            "Some of these idempotency keys were used by another request at the same moment; nothing was "
            "created. Submit again: the payments created meanwhile are returned, not created twice.",
            code="key_race",
        ) from error
    return [existing.get(key) or created[key] for key in keys]


def _new_payment(item: dict) -> dict:
    unknown = set(item) - set(NEW_PAYMENT_FIELDS)
    if unknown:
        raise PaymentError(f"Unknown payment fields: {', '.join(sorted(unknown))}.", code="unknown_fields")
    return {"merchant_reference": "", "customer_email": "", "description": "", **item}


def _validate_many(merchant: Merchant, items: list[dict]) -> None:
    errors: dict[str, list[str]] = {}
    first_of_key: dict[str, int] = {}
    for number, item in enumerate(items, start=1):
        try:
            validate_new_payment(merchant=merchant, **item)
        except PaymentError as error:
            for field, messages in error.message_dict.items():
                errors.setdefault(f"item {number}: {field}", []).extend(messages)
        key = item["idempotency_key"]
        if key in first_of_key:
            errors.setdefault(f"item {number}: idempotency_key", []).append(
                f"The same idempotency key as item {first_of_key[key]}."
            )
        first_of_key.setdefault(key, number)
    if errors:
        raise PaymentError(errors)


def _refuse_reused_keys(items: list[dict], existing: dict[str, Payment]) -> None:
    errors = {}
    for number, item in enumerate(items, start=1):
        payment = existing.get(item["idempotency_key"])
        if payment is None:
            continue
        differing = sorted(
            name for name in NEW_PAYMENT_FIELDS if name != "idempotency_key" and getattr(payment, name) != item[name]
        )
        if differing:
            errors[f"item {number}: idempotency_key"] = [
                f"This idempotency key was already used for payment {payment.public_id} with a "
                f"different {', '.join(differing)}."
            ]
    if errors:
        raise PaymentError(errors)


def _insert_payments(merchant: Merchant, items: list[dict], actor: Actor) -> list[Payment]:
    """In the caller's transaction: the payments, their `created` events, their signals and
    their processing jobs, one statement each."""
    if not items:
        return []
    user = actor_user(actor)
    ids = insert_rows(
        Payment,
        each={name: [item[name] for item in items] for name in NEW_PAYMENT_FIELDS}
        | {"public_id": [new_public_id() for _ in items]},
        same={"merchant_id": merchant.pk, "status": PaymentStatus.PENDING, "created_by_id": getattr(user, "pk", None)},
    )
    payments = list(Payment.objects.filter(pk__in=ids).order_by("pk"))
    for payment in payments:
        payment.merchant = merchant
    same = {
        "from_status": "",
        "to_status": PaymentStatus.PENDING,
        "actor_id": getattr(user, "pk", None),
        "actor_label": "" if user else "system",
        "reason": "created",
        "created_at": timezone.now(),
    }
    event_ids = insert_rows(PaymentEvent, each={"payment_id": [payment.pk for payment in payments]}, same=same)
    for payment, event_id in zip(payments, event_ids, strict=True):
        event = PaymentEvent(id=event_id, payment=payment, **same)
        event.actor = user
        payment_status_changed.send(
            sender=Payment, payment=payment, event=event, from_status="", to_status=PaymentStatus.PENDING
        )
    job_enqueue_many(
        func=PROCESS_JOB,
        kwargs_list=[{"payment_id": payment.pk} for payment in payments],
        queue="payments",
        concerns=payments,
        requested_by=actor,
    )
    return payments


def payment_enqueue_processing(payment: Payment, *, actor: Actor = None) -> Job:
    """In the caller's transaction: the processing job of a pending payment."""
    return job_enqueue(
        func=PROCESS_JOB,
        kwargs={"payment_id": payment.pk},
        queue="payments",
        concerns=payment,
        requested_by=actor,
    )


def payment_process_now(*, payment: Payment, actor: Actor, reason: str = "") -> Job:
    """Queue processing of a pending payment that has no live processing job (its job
    failed, was canceled, or was lost)."""
    with transaction.atomic():
        payment = payment_lock(payment.pk)
        if payment.status != PaymentStatus.PENDING:
            raise wrong_status(payment, "pending")
        if payment_active_jobs(payment, func=PROCESS_JOB).exists():
            raise PaymentError("already queued", code="already_queued")
        audit_record(actor=actor, action="payment_process", target=payment, reason=reason)
        return payment_enqueue_processing(payment, actor=actor)


def payment_retry(*, payment: Payment, actor: Actor, reason: str = "") -> Payment:
    """Move a failed payment back to pending and queue a new attempt (a new idempotency key)."""
    with transaction.atomic():
        payment = payment_lock(payment.pk)
        if payment.status != PaymentStatus.FAILED:
            raise wrong_status(payment, "failed")
        status_transition(payment, "retry", actor=actor, reason=reason or "retry")
        audit_record(actor=actor, action="payment_retry", target=payment, reason=reason)
        payment_enqueue_processing(payment, actor=actor)
    return payment


def payment_cancel(*, payment: Payment, actor: Actor, reason: str = "") -> Payment:
    """Cancel a pending payment; its queued processing job then finds nothing to do."""
    with transaction.atomic():
        payment = payment_lock(payment.pk)
        if payment.status != PaymentStatus.PENDING:
            raise wrong_status(payment, "pending")
        status_transition(payment, "cancel", actor=actor, reason=reason or "canceled")
        audit_record(actor=actor, action="payment_cancel", target=payment, reason=reason)
    return payment


# --- processing (called by jobs) ----------------------------------------------------------


def payment_processing_start(*, payment_id: int) -> PaymentAttempt | None:
    """Lock the payment and return the attempt to send to the gateway: a new one for a
    pending payment, or the open one of a payment whose previous run died mid-call (same
    idempotency key, so the gateway cannot charge twice). None when there is nothing to do."""
    with transaction.atomic():
        payment = payment_lock(payment_id)
        if payment.status == PaymentStatus.PROCESSING:
            return payment.attempts.filter(outcome=AttemptOutcome.PENDING).order_by("-number").first()
        if payment.status != PaymentStatus.PENDING:
            return None
        status_transition(payment, "start_processing", actor_label="worker")
        number = payment.attempts.count() + 1
        return PaymentAttempt.objects.create(
            payment=payment, number=number, idempotency_key=f"{payment.public_id}_a{number}"
        )


def payment_charge_result_apply(*, attempt_id: int, result: ChargeResult) -> Payment:
    """Record the gateway's answer on the attempt and move the payment; an answer already
    applied (a duplicate run) changes nothing. Unknown answers schedule the recovery job."""
    with transaction.atomic():
        attempt = PaymentAttempt.objects.select_related("payment").get(pk=attempt_id)
        payment = payment_lock(attempt.payment_id)
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
            status_transition(payment, "succeed", actor_label="worker", reason="approved by the gateway")
        elif result.outcome == GatewayOutcome.DECLINED:
            attempt.outcome = AttemptOutcome.DECLINED
            status_transition(payment, "fail", actor_label="worker", reason=f"declined: {result.error_code}")
        else:
            attempt.outcome = AttemptOutcome.UNKNOWN
            status_transition(
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


def payment_lookup_result_apply(*, attempt_id: int, result: LookupResult) -> Payment:
    """Resolve an unknown payment from the gateway's lookup: found -> succeeded or failed,
    not found -> failed (it never happened), still unclear -> look again later, and after
    the last scheduled look flag it for review."""
    with transaction.atomic():
        attempt = PaymentAttempt.objects.get(pk=attempt_id)
        payment = payment_lock(attempt.payment_id)
        attempt.refresh_from_db()
        if payment.status != PaymentStatus.UNKNOWN or attempt.outcome != AttemptOutcome.UNKNOWN:
            return payment
        attempt.lookups += 1
        if result.outcome == GatewayOutcome.SUCCEEDED:
            attempt.outcome, attempt.gateway_reference = AttemptOutcome.SUCCEEDED, result.gateway_reference
            attempt.error_code = attempt.error_message = ""
            status_transition(payment, "succeed", actor_label="recovery", reason="gateway lookup: charge succeeded")
        elif result.outcome == GatewayOutcome.DECLINED:
            attempt.outcome, attempt.error_code = AttemptOutcome.DECLINED, result.error_code
            attempt.error_message = result.error_message
            status_transition(
                payment, "fail", actor_label="recovery", reason=f"gateway lookup: declined {result.error_code}"
            )
        elif result.outcome == GatewayOutcome.NOT_FOUND:
            attempt.outcome = AttemptOutcome.NOT_FOUND
            status_transition(
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
