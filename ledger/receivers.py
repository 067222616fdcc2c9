"""Receivers of the payments app's domain signals. Each runs inside the transaction of the
status change (payments sends them there), so a posting commits or rolls back with it.
Payments never imports the ledger. Also hooked here: the fee and net section of the portal's
payment page (ledger.portal.views), and the fee column of the payments exports
(payments.exports)."""

from collections.abc import Callable
from typing import Any

from django.db.models import OuterRef, Subquery
from django.dispatch import Signal

from ledger import services
from ledger.models import CapturedFunds
from ledger.portal.views import payment_fee_section
from payments.exports import register_payment_fee
from payments.portal.sections import payment_page_sections
from payments.signals import payment_status_changed, refund_status_changed, run_batched
from payments.states import PaymentStatus, RefundStatus


def payment_status_changed_post(sender, *, payment, event, from_status, to_status, **kwargs) -> None:
    if to_status != PaymentStatus.SUCCEEDED:
        return
    # From unknown with a person as actor: a manual settlement approved by a second person.
    settled_by_hand = from_status == PaymentStatus.UNKNOWN and event.actor_id is not None
    memo = f"capture of {payment.public_id} (manual settlement)" if settled_by_hand else ""
    # A batch of payments (payments.batch, payments.bulk) posts its captures together.
    run_batched(_captures_post, (payment, memo, event.actor))


def _captures_post(captures: list) -> None:
    services.capture_post_many(captures)


def refund_status_changed_post(sender, *, refund, event, from_status, to_status, **kwargs) -> None:
    if from_status == "":
        services.refund_hold_post(refund=refund)
    elif to_status == RefundStatus.SUCCEEDED:
        services.refund_post(refund=refund)
    elif to_status in (RefundStatus.FAILED, RefundStatus.REJECTED):
        services.refund_release_post(refund=refund)


HOOKS: list[tuple[Signal, Callable[..., Any], str]] = [
    (payment_status_changed, payment_status_changed_post, "ledger.payment_status_changed"),
    (refund_status_changed, refund_status_changed_post, "ledger.refund_status_changed"),
    (payment_page_sections, payment_fee_section, "ledger.portal.views.payment_fee_section"),
]


def payment_fee() -> Subquery:
    """A payment's fee as computed at capture (NULL when it was not captured)."""
    return Subquery(CapturedFunds.objects.filter(payment=OuterRef("pk")).values("fee_minor")[:1])


def connect_receivers() -> None:
    for signal, receiver, dispatch_uid in HOOKS:
        signal.connect(receiver, dispatch_uid=dispatch_uid)
    register_payment_fee(payment_fee)
