"""Job bodies: take ids, load, call services, return a small result. Each is idempotent:
it starts from the payment's current state, so a duplicate run charges nothing."""

from payments.gateways import ChargeRequest, RefundRequest, get_gateway
from payments.selectors import payment_unknown_attempt, refund_charge_reference
from payments.services.payments import (
    payment_charge_result_apply,
    payment_lookup_result_apply,
    payment_processing_start,
)
from payments.services.refunds import refund_processing_start, refund_result_apply


def process_payment(payment_id: int) -> dict:
    """Send the payment's attempt to the gateway (outside any lock) and apply the answer."""
    attempt = payment_processing_start(payment_id=payment_id)
    if attempt is None:
        return {"skipped": "nothing to process"}
    payment = attempt.payment
    result = get_gateway().charge(
        ChargeRequest(
            idempotency_key=attempt.idempotency_key,
            amount_minor=payment.amount_minor,
            currency=payment.currency,
            payment_method=payment.payment_method,
            reference=payment.public_id,
        )
    )
    payment = payment_charge_result_apply(attempt_id=attempt.pk, result=result)
    return {"status": payment.status}


def recover_payment(payment_id: int) -> dict:
    """Ask the gateway what happened to an unknown payment's attempt and resolve it."""
    attempt = payment_unknown_attempt(payment_id=payment_id)
    if attempt is None:
        return {"skipped": "not unknown"}
    result = get_gateway().lookup(attempt.idempotency_key)
    payment = payment_lookup_result_apply(attempt_id=attempt.pk, result=result)
    return {"status": payment.status}


def refund_payment(refund_id: int) -> dict:
    """Send an approved refund to the gateway under its own key and apply the answer; with
    no clear answer it raises, and the runner retries under the same key."""
    refund = refund_processing_start(refund_id=refund_id)
    if refund is None:
        return {"skipped": "nothing to refund"}
    result = get_gateway().refund(
        RefundRequest(
            idempotency_key=refund.idempotency_key,
            charge_reference=refund_charge_reference(refund),
            amount_minor=refund.amount_minor,
            currency=refund.payment.currency,
        )
    )
    refund = refund_result_apply(refund_id=refund.pk, result=result)
    return {"status": refund.status}
