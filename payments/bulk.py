"""The payments list's bulk actions, a chunk of payments at a time (backoffice.bulk): the same
checks and records as payment_retry / payment_process_now / payment_cancel, with bulk writes.

Each handler runs in the caller's transaction (the bulk job's chunk), locks the chunk's
payments in id order, changes the eligible ones with one UPDATE, writes their events, audit
entries and jobs with one INSERT each, sends `payment_status_changed` per changed payment
(notifications listen in the same transaction), and returns {str(id): ObjectOutcome}.
"""

from collections.abc import Sequence

from django.db import transaction
from django.utils import timezone

from backoffice.actors import Actor, actor_user
from backoffice.db import insert_rows
from backoffice.models import Job
from backoffice.progress import ObjectOutcome
from backoffice.services import audit_record_many, job_enqueue_many
from payments.models import Payment, PaymentEvent
from payments.selectors import ACTIVE_JOB_STATUSES
from payments.services import PROCESS_JOB
from payments.signals import payment_status_changed, receivers_batched
from payments.states import TRANSITIONS, PaymentStatus


def _locked_chunk(ids: Sequence[int | str]) -> list[Payment]:
    return list(
        Payment.objects.select_for_update(of=("self",)).select_related("merchant").filter(pk__in=ids).order_by("pk")
    )


def _not(payment: Payment, expected: str) -> ObjectOutcome:
    return ObjectOutcome(
        label=payment.public_id, skipped=f"not {expected} (it is {payment.get_status_display().lower()})"
    )


def _transition_many(payments: list[Payment], name: str, *, actor: Actor, reason: str, actor_label: str = "") -> None:
    """Move payments that all stand in one of the transition's sources to its target: one
    UPDATE (guarded by the sources, like the FSM transition), one INSERT of events, then the
    signal per payment."""
    sources, target = TRANSITIONS[name]
    if not payments:
        return
    now = timezone.now()
    from_statuses = {payment.pk: payment.status for payment in payments}
    updated = Payment.objects.filter(pk__in=list(from_statuses), status__in=sources).update(
        status=target, updated_at=now
    )
    if updated != len(payments):  # the rows are locked: this would be a bug, not a race
        raise RuntimeError(f"{name}: {updated} of {len(payments)} payments moved")
    user = actor_user(actor)
    for payment in payments:
        # The field is protected against assignment; this mirrors the row just updated.
        payment.__dict__["status"] = target
        payment.updated_at = now
    same: dict[str, object] = {
        "to_status": target,
        "actor_id": user.pk if user else None,
        "actor_label": actor_label or ("" if user else "system"),
    }
    same.update(reason=reason, created_at=now)
    event_ids = insert_rows(
        PaymentEvent,
        each={"payment_id": [payment.pk for payment in payments], "from_status": list(from_statuses.values())},
        same=same,
    )
    with receivers_batched():  # receivers that can, do their work for all these payments at once
        for payment, event_id in zip(payments, event_ids, strict=True):
            event = PaymentEvent(id=event_id, payment=payment, from_status=from_statuses[payment.pk], **same)
            event.actor = user
            payment_status_changed.send(
                sender=Payment, payment=payment, event=event, from_status=from_statuses[payment.pk], to_status=target
            )


def _enqueue_processing_many(payments: list[Payment], *, actor: Actor) -> None:
    job_enqueue_many(
        func=PROCESS_JOB,
        kwargs_list=[{"payment_id": payment.pk} for payment in payments],
        queue="payments",
        concerns=payments,
        requested_by=actor,
    )


def payments_retry_many(*, ids: Sequence[int | str], actor: Actor, reason: str) -> dict[str, ObjectOutcome]:
    """payment_retry for a chunk: failed payments go back to pending with a new processing job."""
    outcomes: dict[str, ObjectOutcome] = {}
    chosen: list[Payment] = []
    with transaction.atomic():
        for payment in _locked_chunk(ids):
            if payment.status in TRANSITIONS["retry"][0]:
                chosen.append(payment)
                outcomes[str(payment.pk)] = ObjectOutcome(label=payment.public_id)
            else:
                outcomes[str(payment.pk)] = _not(payment, "failed")
        _transition_many(chosen, "retry", actor=actor, reason=reason or "retry")
        audit_record_many(actor=actor, action="payment_retry", targets=chosen, reason=reason)
        _enqueue_processing_many(chosen, actor=actor)
    return outcomes


def payments_process_now_many(*, ids: Sequence[int | str], actor: Actor, reason: str) -> dict[str, ObjectOutcome]:
    """payment_process_now for a chunk: pending payments without a live processing job get one."""
    outcomes: dict[str, ObjectOutcome] = {}
    chosen: list[Payment] = []
    with transaction.atomic():
        payments = _locked_chunk(ids)
        queued = set(
            Job.objects.filter(
                content_type__app_label="payments",
                content_type__model="payment",
                object_id__in=[str(payment.pk) for payment in payments],
                func=PROCESS_JOB,
                status__in=ACTIVE_JOB_STATUSES,
            ).values_list("object_id", flat=True)
        )
        for payment in payments:
            if payment.status != PaymentStatus.PENDING:
                outcomes[str(payment.pk)] = _not(payment, "pending")
            elif str(payment.pk) in queued:
                outcomes[str(payment.pk)] = ObjectOutcome(label=payment.public_id, skipped="already queued")
            else:
                chosen.append(payment)
                outcomes[str(payment.pk)] = ObjectOutcome(label=payment.public_id)
        audit_record_many(actor=actor, action="payment_process", targets=chosen, reason=reason)
        _enqueue_processing_many(chosen, actor=actor)
    return outcomes


def payments_cancel_many(*, ids: Sequence[int | str], actor: Actor, reason: str) -> dict[str, ObjectOutcome]:
    """payment_cancel for a chunk: pending payments are canceled (their queued jobs then find
    nothing to do)."""
    outcomes: dict[str, ObjectOutcome] = {}
    chosen: list[Payment] = []
    with transaction.atomic():
        for payment in _locked_chunk(ids):
            if payment.status in TRANSITIONS["cancel"][0]:
                chosen.append(payment)
                outcomes[str(payment.pk)] = ObjectOutcome(label=payment.public_id)
            else:
                outcomes[str(payment.pk)] = _not(payment, "pending")
        _transition_many(chosen, "cancel", actor=actor, reason=reason or "canceled")
        audit_record_many(actor=actor, action="payment_cancel", targets=chosen, reason=reason)
    return outcomes
