"""Manual settlements go through the state machine's one transition path: the payment or refund
they settle gets its event, its webhook notification and its ledger posting, and the request's
own status changes by transition only."""

import pytest
from django.test import override_settings

from backoffice.models import Job, JobStatus
from backoffice.runner import run_job
from ledger.models import Transaction
from notifications.models import Notification
from payments import services
from payments.errors import PaymentError
from payments.jobs import process_payment, recover_refund, refund_payment
from payments.models import Refund, SettlementRequest, new_request_key
from payments.selectors import refund_remaining_minor
from payments.states import PaymentStatus, RefundStatus, SettlementStatus
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(db):
    return UserFactory(username="otto-operator", roles=["Operators"])


@pytest.fixture
def approver(db):
    return UserFactory(username="arthur-approver", roles=["Approvers"])


def ask(payment, operator, *, settle_as="succeeded", refund=None, reference="ch_seen_at_the_processor"):
    settlement, created = services.settlement_request(
        payment=payment,
        refund=refund,
        settle_as=settle_as,
        gateway_reference=reference,
        reason="checked the processor's dashboard",
        requested_by=operator,
        request_key=new_request_key("test"),
    )
    assert created
    return settlement


def test_a_payment_settled_by_hand_has_its_event_webhook_and_ledger_capture(make_payment, endpoint, operator, approver):
    payment = make_payment(payment_method="tok_error")
    process_payment(payment.pk)
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.UNKNOWN

    settlement = services.settlement_approve(settlement=ask(payment, operator), approver=approver, note="seen")

    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    event = payment.events.get(from_status=PaymentStatus.UNKNOWN)
    assert (event.to_status, event.actor) == (PaymentStatus.SUCCEEDED, approver)
    assert Notification.objects.filter(payment=payment, event_type="payment.succeeded", channel="webhook").count() == 1
    capture = Transaction.objects.get(idempotency_key=f"capture:{payment.public_id}")
    assert "manual settlement" in capture.memo
    settlement.refresh_from_db()
    assert (settlement.status, settlement.decided_by) == (SettlementStatus.APPROVED, approver)


def test_a_settlement_request_status_changes_by_transition_only(make_payment, operator, approver):
    payment = make_payment(payment_method="tok_error")
    process_payment(payment.pk)
    settlement = ask(payment, operator, settle_as="failed", reference="")
    with pytest.raises(AttributeError):
        settlement.status = SettlementStatus.APPROVED  # protected: no decision outside the services

    services.settlement_reject(settlement=settlement, approver=approver, note="look again")

    settlement = SettlementRequest.objects.get(pk=settlement.pk)
    assert settlement.status == SettlementStatus.REJECTED
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.UNKNOWN  # nothing else moved


def unanswered_refund(payment, amount_minor: int) -> Refund:
    """A refund whose every send under its key gets no clear answer (simulated gateway: ...016
    or ...017), sent as often as PAYMENTS_REFUND_SENDS allows."""
    finance = UserFactory(username=f"finance-{amount_minor}", roles=["Finance"])
    refund, _ = services.refund_request(
        payment=payment,
        amount_minor=amount_minor,
        reason="returned",
        requested_by=finance,
        request_key=new_request_key("test"),
    )
    job = Job.objects.get(func=services.REFUND_JOB, kwargs__refund_id=refund.pk)
    for _ in range(3):
        Job.objects.filter(pk=job.pk).update(status=JobStatus.QUEUED)
        run_job(str(job.pk))
    refund.refresh_from_db()
    return refund


@override_settings(PAYMENTS_REFUND_SENDS=3, PAYMENTS_RECOVERY_SCHEDULE_SECONDS=[0, 0])
def test_a_refund_never_answered_becomes_unknown_is_looked_up_then_flagged(captured):
    payment = captured(amount_minor=100_00)
    refund = unanswered_refund(payment, 10_17)
    assert refund.status == RefundStatus.UNKNOWN and refund.unclear_answers == 3
    assert refund_remaining_minor(payment) == 100_00 - 10_17  # still held
    # the job stopped sending: it finished; the lookups by the refund's key took over
    assert Job.objects.get(func=services.REFUND_JOB).status == JobStatus.SUCCEEDED
    assert refund_payment(refund.pk) == {"skipped": "nothing to refund"}

    assert recover_refund(refund.pk) == {"status": RefundStatus.UNKNOWN}
    assert recover_refund(refund.pk) == {"status": RefundStatus.UNKNOWN}

    refund.refresh_from_db()
    assert (refund.lookups, refund.needs_review) == (2, True)
    assert Job.objects.filter(func=services.RECOVER_REFUND_JOB).count() == 2  # no third look


@override_settings(PAYMENTS_REFUND_SENDS=3, PAYMENTS_RECOVERY_SCHEDULE_SECONDS=[0])
def test_an_unknown_refund_found_by_its_lookup_succeeds_with_its_ledger_posting(captured):
    payment = captured(amount_minor=100_00)
    refund = unanswered_refund(payment, 10_16)
    assert refund.status == RefundStatus.UNKNOWN

    assert recover_refund(refund.pk) == {"status": RefundStatus.SUCCEEDED}

    refund.refresh_from_db()
    payment.refresh_from_db()
    assert refund.gateway_reference and payment.status == PaymentStatus.PARTIALLY_REFUNDED
    assert Transaction.objects.filter(idempotency_key=f"refund:{refund.public_id}").count() == 1
    assert list(refund.events.values_list("to_status", flat=True)) == [
        RefundStatus.REQUESTED,
        RefundStatus.APPROVED,
        RefundStatus.PROCESSING,
        RefundStatus.UNKNOWN,
        RefundStatus.SUCCEEDED,
    ]


@override_settings(PAYMENTS_REFUND_SENDS=3, PAYMENTS_RECOVERY_SCHEDULE_SECONDS=[0])
def test_an_unknown_refund_settled_by_two_people_has_its_event_webhook_and_ledger_posting(
    captured, endpoint, operator, approver
):
    payment = captured(amount_minor=100_00)
    refund = unanswered_refund(payment, 10_17)
    recover_refund(refund.pk)
    refund.refresh_from_db()
    assert refund.needs_review

    settlement = ask(payment, operator, refund=refund, reference="re_seen_at_the_processor")
    with pytest.raises(PaymentError, match="permission"):  # the requester may not decide it
        services.settlement_approve(settlement=settlement, approver=operator)
    services.settlement_approve(settlement=settlement, approver=approver, note="seen")

    refund.refresh_from_db()
    payment.refresh_from_db()
    assert (refund.status, refund.needs_review, refund.gateway_reference) == (
        RefundStatus.SUCCEEDED,
        False,
        "re_seen_at_the_processor",
    )
    assert payment.status == PaymentStatus.PARTIALLY_REFUNDED
    event = refund.events.get(from_status=RefundStatus.UNKNOWN)
    assert (event.to_status, event.actor) == (RefundStatus.SUCCEEDED, approver)
    assert Notification.objects.filter(refund=refund, event_type="refund.succeeded").count() == 1
    assert Transaction.objects.filter(idempotency_key=f"refund:{refund.public_id}").count() == 1


def test_only_an_unknown_refund_can_be_settled_by_hand(captured, operator):
    payment = captured(amount_minor=100_00)
    finance = UserFactory(username="fiona-finance", roles=["Finance"])
    refund, _ = services.refund_request(
        payment=payment, amount_minor=10_00, reason="r", requested_by=finance, request_key=new_request_key("test")
    )
    with pytest.raises(PaymentError, match="not unknown"):
        ask(payment, operator, refund=refund)
    assert not SettlementRequest.objects.exists()
