"""What the payment, refund and settlement services share: the row lock, the transition
that records its event and signal, and the refusals."""

from typing import TypeVar

from django.contrib.auth.models import User

from backoffice.actors import Actor, actor_user
from payments.errors import PaymentError
from payments.models import Payment, PaymentEvent, Refund, RefundEvent, SettlementRequest
from payments.signals import payment_status_changed, refund_status_changed


def event_record(
    subject: Payment | Refund, *, from_status: str, actor: Actor = None, actor_label: str = "", reason: str = ""
) -> PaymentEvent | RefundEvent:
    """Append the subject's event (PaymentEvent or RefundEvent) and send its status signal."""
    user = actor_user(actor)
    fields = {
        "from_status": from_status,
        "to_status": subject.status,
        "actor": user,
        "actor_label": actor_label or ("" if user else "system"),
        "reason": reason,
    }
    event: PaymentEvent | RefundEvent
    if isinstance(subject, Payment):
        event = PaymentEvent.objects.create(payment=subject, **fields)
        payment_status_changed.send(
            sender=Payment, payment=subject, event=event, from_status=from_status, to_status=subject.status
        )
    else:
        event = RefundEvent.objects.create(refund=subject, **fields)
        refund_status_changed.send(
            sender=Refund, refund=subject, event=event, from_status=from_status, to_status=subject.status
        )
    return event


def status_transition(
    subject: Payment | Refund | SettlementRequest,
    name: str,
    *,
    actor: Actor = None,
    actor_label: str = "",
    reason: str = "",
) -> None:
    """Run a django-fsm transition on a locked payment, refund or settlement request and save it;
    for a payment or refund, record the event and send the signal. (A settlement request's
    history is the audit trail, and the event of the payment or refund it settles.)"""
    from_status = subject.status
    getattr(subject, name)()
    subject.save()
    if isinstance(subject, SettlementRequest):
        return
    event_record(subject, from_status=from_status, actor=actor, actor_label=actor_label, reason=reason)


def payment_lock(payment_id: int) -> Payment:
    """The payment, locked for the caller's transaction."""
    # The merchant comes along (notifications read it on every change) but is not locked:
    # locking it would serialise all of a merchant's payments.
    return Payment.objects.select_for_update(of=("self",)).select_related("merchant").get(pk=payment_id)


def wrong_status(payment: Payment, expected: str) -> PaymentError:
    """The refusal of an operation on a payment that is not in the `expected` state."""
    return PaymentError(f"not {expected} (it is {payment.get_status_display().lower()})", code="wrong_status")


def require_perm(user: Actor, perm: str, what: str) -> User:
    """Refuse unless `user` is an active user with `perm`; the user, once it has it."""
    if not (isinstance(user, User) and user.pk and user.is_active and user.has_perm(perm)):
        raise PaymentError(f"You do not have permission to {what}.", code="permission_denied")
    return user


Decided = TypeVar("Decided", Refund, SettlementRequest)


def lock_for_second_person(subject: Decided, *, approver: User) -> Decided:
    """Lock the payment, then the refund or settlement request awaiting a decision, and check
    the decider (who has the permission: `require_perm`) may decide it: not the requester
    (four eyes), still open."""
    payment = payment_lock(subject.payment_id)
    subject = type(subject).objects.select_for_update().get(pk=subject.pk)
    subject.payment = payment
    kind = "refund" if isinstance(subject, Refund) else "manual settlement"
    if subject.requested_by_id == approver.pk:
        raise PaymentError(f"A {kind} needs a second person: you asked for this one.", code="four_eyes")
    if subject.status != "requested":
        raise PaymentError(f"not awaiting approval (it is {subject.get_status_display().lower()})", code="wrong_status")
    return subject
