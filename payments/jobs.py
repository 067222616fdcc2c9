"""Job bodies: take ids, load, call services, return a small result. Each is idempotent:
it starts from the payment's current state, so a duplicate run charges nothing."""

import time
from contextlib import contextmanager

import structlog

from backoffice.metrics import metrics_record
from payments.gateways import ChargeRequest, RefundRequest, get_gateway
from payments.models import Refund
from payments.selectors import payment_unknown_attempt, refund_charge_reference
from payments.services.exports import export_write as export_file_write
from payments.services.payments import (
    payment_charge_result_apply,
    payment_lookup_result_apply,
    payment_processing_start,
)
from payments.services.refunds import refund_lookup_result_apply, refund_processing_start, refund_result_apply
from payments.states import RefundStatus


@contextmanager
def _processor_call(operation: str):
    """Time one call to the processor for /metrics; the caller sets call["outcome"]."""
    call = {"outcome": "error"}
    started = time.monotonic()
    try:
        yield call
    finally:
        labels = {"operation": operation, "outcome": call["outcome"]}
        metrics_record(observations=[("processor_call_seconds", labels, time.monotonic() - started)])


def process_payment(payment_id: int) -> dict:
    """Send the payment's attempt to the gateway (outside any lock) and apply the answer."""
    attempt = payment_processing_start(payment_id=payment_id)
    if attempt is None:
        return {"skipped": "nothing to process"}
    payment = attempt.payment
    structlog.contextvars.bind_contextvars(payment=payment.public_id)
    with _processor_call("charge") as call:
        result = get_gateway().charge(
            ChargeRequest(
                idempotency_key=attempt.idempotency_key,
                amount_minor=payment.amount_minor,
                currency=payment.currency,
                payment_method=payment.payment_method,
                reference=payment.public_id,
            )
        )
        call["outcome"] = result.outcome.value
    payment = payment_charge_result_apply(attempt_id=attempt.pk, result=result)
    return {"status": payment.status}


def recover_payment(payment_id: int) -> dict:
    """Ask the gateway what happened to an unknown payment's attempt and resolve it."""
    attempt = payment_unknown_attempt(payment_id=payment_id)
    if attempt is None:
        return {"skipped": "not unknown"}
    structlog.contextvars.bind_contextvars(payment=attempt.payment.public_id)
    with _processor_call("lookup") as call:
        result = get_gateway().lookup(attempt.idempotency_key)
        call["outcome"] = result.outcome.value
    payment = payment_lookup_result_apply(attempt_id=attempt.pk, result=result)
    return {"status": payment.status}


def refund_payment(refund_id: int) -> dict:
    """Send an approved refund to the gateway under its own key and apply the answer; with
    no clear answer it raises, and the runner retries under the same key."""
    refund = refund_processing_start(refund_id=refund_id)
    if refund is None:
        return {"skipped": "nothing to refund"}
    structlog.contextvars.bind_contextvars(payment=refund.payment.public_id, refund=refund.public_id)
    with _processor_call("refund") as call:
        result = get_gateway().refund(
            RefundRequest(
                idempotency_key=refund.idempotency_key,
                charge_reference=refund_charge_reference(refund),
                amount_minor=refund.amount_minor,
                currency=refund.payment.currency,
            )
        )
        call["outcome"] = result.outcome.value
    refund = refund_result_apply(refund_id=refund.pk, result=result)
    return {"status": refund.status}


def export_write(export_id: int) -> dict:
    """Write a large export's file in chunks, with progress."""
    return export_file_write(export_id=export_id)


def recover_refund(refund_id: int) -> dict:
    """Ask the gateway what happened to an unknown refund, by the refund's own key, and resolve it."""
    refund = Refund.objects.select_related("payment").filter(pk=refund_id, status=RefundStatus.UNKNOWN).first()
    if refund is None:
        return {"skipped": "not unknown"}
    structlog.contextvars.bind_contextvars(payment=refund.payment.public_id, refund=refund.public_id)
    with _processor_call("lookup") as call:
        result = get_gateway().lookup(refund.idempotency_key)
        call["outcome"] = result.outcome.value
    refund = refund_lookup_result_apply(refund_id=refund.pk, result=result)
    return {"status": refund.status}
