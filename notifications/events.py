"""What merchants are told about: event types, which status change raises which event, and
the public payload of each. Pure data and pure functions, no database writes."""

import json
import secrets
import string
from datetime import datetime

from django.db.models import TextChoices

from ledger.states import PayoutStatus
from payments.states import PaymentStatus, RefundStatus

EVENT_ID_ALPHABET = string.ascii_letters + string.digits


class EventType(TextChoices):
    PAYMENT_SUCCEEDED = "payment.succeeded", "Payment succeeded"
    PAYMENT_FAILED = "payment.failed", "Payment failed"
    PAYMENT_CANCELED = "payment.canceled", "Payment canceled"
    PAYMENT_PARTIALLY_REFUNDED = "payment.partially_refunded", "Payment partially refunded"
    PAYMENT_REFUNDED = "payment.refunded", "Payment refunded"
    REFUND_SUCCEEDED = "refund.succeeded", "Refund succeeded"
    REFUND_FAILED = "refund.failed", "Refund failed"
    PAYOUT_CREATED = "payout.created", "Payout created"
    PAYOUT_IN_TRANSIT = "payout.in_transit", "Payout in transit"
    PAYOUT_PAID = "payout.paid", "Payout paid"
    PAYOUT_FAILED = "payout.failed", "Payout failed"
    WEBHOOK_TEST = "webhook.test", "Test webhook"
    WEBHOOK_ENDPOINT_DISABLED = "webhook_endpoint.disabled", "Webhook endpoint disabled"


# Payment status -> the event a merchant hears about. Other statuses (processing, unknown,
# pending again after a retry) are internal and raise nothing.
PAYMENT_STATUS_EVENTS: dict[str, str] = {
    PaymentStatus.SUCCEEDED: EventType.PAYMENT_SUCCEEDED,
    PaymentStatus.FAILED: EventType.PAYMENT_FAILED,
    PaymentStatus.CANCELED: EventType.PAYMENT_CANCELED,
    PaymentStatus.PARTIALLY_REFUNDED: EventType.PAYMENT_PARTIALLY_REFUNDED,
    PaymentStatus.REFUNDED: EventType.PAYMENT_REFUNDED,
}

# Refund status -> event. Requested, approved, processing are internal.
REFUND_STATUS_EVENTS: dict[str, str] = {
    RefundStatus.SUCCEEDED: EventType.REFUND_SUCCEEDED,
    RefundStatus.FAILED: EventType.REFUND_FAILED,
}

# Payout status -> event. Requested (awaiting a second staff member) and rejected are internal:
# a payout exists for the merchant from the moment its money leaves the balance (pending).
PAYOUT_STATUS_EVENTS: dict[str, str] = {
    PayoutStatus.PENDING: EventType.PAYOUT_CREATED,
    PayoutStatus.IN_TRANSIT: EventType.PAYOUT_IN_TRANSIT,
    PayoutStatus.PAID: EventType.PAYOUT_PAID,
    PayoutStatus.FAILED: EventType.PAYOUT_FAILED,
}

# Events a merchant subscribes endpoints to (test sends go regardless).
SUBSCRIBABLE_EVENTS: tuple[str, ...] = (
    EventType.PAYMENT_SUCCEEDED,
    EventType.PAYMENT_FAILED,
    EventType.PAYMENT_CANCELED,
    EventType.PAYMENT_PARTIALLY_REFUNDED,
    EventType.PAYMENT_REFUNDED,
    EventType.REFUND_SUCCEEDED,
    EventType.REFUND_FAILED,
    EventType.PAYOUT_CREATED,
    EventType.PAYOUT_IN_TRANSIT,
    EventType.PAYOUT_PAID,
    EventType.PAYOUT_FAILED,
)

# Events that also go to the merchant's contact address by e-mail.
EMAILED_EVENTS = frozenset(
    {
        EventType.PAYMENT_SUCCEEDED,
        EventType.PAYMENT_FAILED,
        EventType.PAYMENT_PARTIALLY_REFUNDED,
        EventType.PAYMENT_REFUNDED,
        EventType.WEBHOOK_ENDPOINT_DISABLED,
    }
)
# Refund events go to webhooks only: the payment's own refunded / partially refunded e-mail
# already tells the merchant, once.


def new_event_id() -> str:
    # Also the webhook-id: unique, unguessable, the same on every retry of one message.
    return "evt_" + "".join(secrets.choice(EVENT_ID_ALPHABET) for _ in range(24))


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def payment_public_fields(payment) -> dict:
    """A payment as merchants see it: no tokens, no customer contact, no internal ids."""
    return {
        "object": "payment",
        "id": payment.public_id,
        "status": payment.status,
        "amount_minor": payment.amount_minor,
        "currency": payment.currency,
        "merchant_reference": payment.merchant_reference,
        "description": payment.description,
        "created_at": _iso(payment.created_at),
    }


def refund_public_fields(refund) -> dict:
    """A refund as merchants see it: its payment's public id, never staff names or notes."""
    return {
        "object": "refund",
        "id": refund.public_id,
        "payment": refund.payment.public_id,
        "status": refund.status,
        "amount_minor": refund.amount_minor,
        "currency": refund.payment.currency,
        "failure_code": refund.error_code,
        "created_at": _iso(refund.created_at),
    }


def payout_public_fields(payout) -> dict:
    """A payout as merchants see it: never staff names, notes or internal ids."""
    return {
        "object": "payout",
        "id": payout.public_id,
        "status": payout.status,
        "amount_minor": payout.amount_minor,
        "currency": payout.currency,
        "bank_reference": payout.bank_reference,
        "failure_reason": payout.failure_reason,
        "created_at": _iso(payout.created_at),
    }


def event_body(*, event_id: str, event_type: str, created_at: datetime, data: dict) -> str:
    """The compact JSON sent as the webhook body: the same bytes on every retry."""
    envelope = {"id": event_id, "type": event_type, "timestamp": _iso(created_at), "data": data}
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=True)
