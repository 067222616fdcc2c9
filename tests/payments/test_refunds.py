import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from backoffice.models import AuditEntry, Job, JobStatus
from backoffice.runner import run_job
from payments import services
from payments.jobs import process_payment, refund_payment
from payments.models import Refund, SettlementRequest, SimulatedGatewayRecord, new_request_key
from payments.selectors import refund_remaining_minor
from payments.states import PaymentStatus, RefundStatus
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def finance(db):
    return UserFactory(username="fiona-finance", roles=["Finance"])


@pytest.fixture
def approver(db):
    return UserFactory(username="arthur-approver", roles=["Approvers"])


def run_refund_jobs(refund):
    for job in Job.objects.filter(func=services.REFUND_JOB, kwargs__refund_id=refund.pk, status=JobStatus.PENDING):
        run_job(str(job.pk))
    refund.refresh_from_db()
    refund.payment.refresh_from_db()
    return refund


def test_small_refund_is_approved_at_once_and_refunds_partially(captured, finance):
    payment = captured()
    refund = services.refund_request(
        payment=payment,
        amount_minor=30_00,
        reason="damaged item",
        requested_by=finance,
        request_key=new_request_key("test"),
    )[0]
    assert refund.status == RefundStatus.APPROVED and not refund.needs_approval and refund.approved_by is None
    run_refund_jobs(refund)
    assert refund.status == RefundStatus.SUCCEEDED and refund.gateway_reference.startswith("sim_re_")
    assert refund.payment.status == PaymentStatus.PARTIALLY_REFUNDED
    assert refund_remaining_minor(refund.payment) == 70_00
    assert [e.to_status for e in refund.events.all()] == ["requested", "approved", "processing", "succeeded"]


def test_several_refunds_up_to_the_capture_end_refunded(captured, finance):
    payment = captured()
    for amount in (40_00, 40_00, 20_00):
        run_refund_jobs(
            services.refund_request(
                payment=payment,
                amount_minor=amount,
                reason="r",
                requested_by=finance,
                request_key=new_request_key("test"),
            )[0]
        )
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.REFUNDED
    assert refund_remaining_minor(payment) == 0
    with pytest.raises(ValidationError, match="not refundable"):
        services.refund_request(
            payment=payment, amount_minor=1, reason="r", requested_by=finance, request_key=new_request_key("test")
        )


def test_a_refund_above_the_remainder_is_refused_and_writes_nothing(captured, finance):
    payment = captured()
    services.refund_request(
        payment=payment, amount_minor=60_00, reason="first", requested_by=finance, request_key=new_request_key("test")
    )
    with pytest.raises(ValidationError) as error:
        services.refund_request(
            payment=payment,
            amount_minor=40_01,
            reason="second",
            requested_by=finance,
            request_key=new_request_key("test"),
        )
    assert "40.00 EUR that remains refundable" in str(error.value)
    assert Refund.objects.count() == 1


@pytest.mark.parametrize("amount", [0, -5, 12.5, True])
def test_bad_amounts_are_refused(captured, finance, amount):
    payment = captured()
    with pytest.raises(ValidationError):
        services.refund_request(
            payment=payment, amount_minor=amount, reason="r", requested_by=finance, request_key=new_request_key("test")
        )
    assert Refund.objects.count() == 0 and not AuditEntry.objects.filter(action="refund_request").exists()


@pytest.mark.parametrize("token", ["tok_decline", "tok_error"])
def test_failed_or_unknown_payments_cannot_be_refunded(make_payment, finance, token):
    payment = make_payment(payment_method=token)
    process_payment(payment.pk)
    payment.refresh_from_db()
    with pytest.raises(ValidationError, match="not refundable"):
        services.refund_request(
            payment=payment, amount_minor=100, reason="r", requested_by=finance, request_key=new_request_key("test")
        )
    assert Refund.objects.count() == 0


def test_canceled_payment_cannot_be_refunded(make_payment, finance, operator):
    payment = services.payment_cancel(payment=make_payment(), actor=operator, reason="customer")
    with pytest.raises(ValidationError):
        services.refund_request(
            payment=payment, amount_minor=100, reason="r", requested_by=finance, request_key=new_request_key("test")
        )


def test_a_reason_is_required(captured, finance):
    with pytest.raises(ValidationError, match="reason"):
        services.refund_request(
            payment=captured(), amount_minor=100, reason="  ", requested_by=finance, request_key=new_request_key("test")
        )


def test_refund_above_threshold_needs_second_approver(captured, finance, approver, settings):
    settings.PAYMENTS_REFUND_APPROVAL_THRESHOLD = {"EUR": "50", "default": "500"}
    payment = captured()
    refund = services.refund_request(
        payment=payment, amount_minor=50_00, reason="big", requested_by=finance, request_key=new_request_key("test")
    )[0]
    assert refund.status == RefundStatus.REQUESTED and refund.needs_approval
    assert not Job.objects.filter(func=services.REFUND_JOB).exists()
    # the requester cannot approve their own refund, even holding the permission
    finance.groups.add(*approver.groups.all())
    finance = type(finance).objects.get(pk=finance.pk)
    with pytest.raises(ValidationError, match="second person"):
        services.refund_approve(refund=refund, approver=finance)
    services.refund_approve(refund=refund, approver=approver, note="checked the order")
    refund = run_refund_jobs(refund)
    assert refund.status == RefundStatus.SUCCEEDED and refund.approved_by == approver


def test_threshold_is_per_currency(captured, finance, settings):
    settings.PAYMENTS_REFUND_APPROVAL_THRESHOLD = {"JPY": "5000", "default": "1"}
    yen = services.refund_request(
        payment=captured(amount_minor=10_000, currency="JPY"),
        amount_minor=4_999,
        reason="r",
        requested_by=finance,
        request_key=new_request_key("test"),
    )[0]
    assert yen.status == RefundStatus.APPROVED
    euro = services.refund_request(
        payment=captured(), amount_minor=1_00, reason="r", requested_by=finance, request_key=new_request_key("test")
    )[0]
    assert euro.status == RefundStatus.REQUESTED


def test_the_database_refuses_approver_equal_to_requester(captured, finance, settings):
    settings.PAYMENTS_REFUND_APPROVAL_THRESHOLD = {"default": "1"}
    refund = services.refund_request(
        payment=captured(), amount_minor=5_00, reason="r", requested_by=finance, request_key=new_request_key("test")
    )[0]
    with pytest.raises(IntegrityError), transaction.atomic():
        Refund.objects.filter(pk=refund.pk).update(approved_by=finance)


def test_rejection_needs_a_note_and_frees_the_amount(captured, finance, approver, settings):
    settings.PAYMENTS_REFUND_APPROVAL_THRESHOLD = {"default": "1"}
    payment = captured()
    refund = services.refund_request(
        payment=payment, amount_minor=100_00, reason="all", requested_by=finance, request_key=new_request_key("test")
    )[0]
    assert refund_remaining_minor(payment) == 0
    with pytest.raises(ValidationError):
        services.refund_reject(refund=refund, approver=approver, note="")
    services.refund_reject(refund=refund, approver=approver, note="customer kept the goods")
    refund.refresh_from_db()
    assert refund.status == RefundStatus.REJECTED and refund.rejected_by == approver
    assert refund_remaining_minor(payment) == 100_00
    assert AuditEntry.objects.filter(action="refund_reject", actor=approver).exists()


def test_users_without_the_permission_are_refused(captured, operator, viewer, finance, settings):
    payment = captured()
    for user in (operator, viewer):
        with pytest.raises(ValidationError, match="permission"):
            services.refund_request(
                payment=payment, amount_minor=100, reason="r", requested_by=user, request_key=new_request_key("test")
            )
    settings.PAYMENTS_REFUND_APPROVAL_THRESHOLD = {"default": "0.01"}
    refund = services.refund_request(
        payment=payment, amount_minor=100, reason="r", requested_by=finance, request_key=new_request_key("test")
    )[0]
    for user in (operator, viewer):
        with pytest.raises(ValidationError, match="permission"):
            services.refund_approve(refund=refund, approver=user)
    refund.refresh_from_db()
    assert refund.status == RefundStatus.REQUESTED


@pytest.mark.parametrize(
    ("amount", "status", "payment_status", "error_code"),
    [
        (30_00, RefundStatus.SUCCEEDED, PaymentStatus.PARTIALLY_REFUNDED, ""),
        (30_13, RefundStatus.FAILED, PaymentStatus.SUCCEEDED, "refund_declined"),
    ],
)
def test_refund_job_outcomes(captured, finance, amount, status, payment_status, error_code):
    refund = run_refund_jobs(
        services.refund_request(
            payment=captured(),
            amount_minor=amount,
            reason="r",
            requested_by=finance,
            request_key=new_request_key("test"),
        )[0]
    )
    assert (refund.status, refund.payment.status, refund.error_code) == (status, payment_status, error_code)


@pytest.mark.parametrize("amount", [30_14, 30_15])
def test_unclear_refund_answers_retry_under_the_same_key_and_refund_once(captured, finance, amount):
    refund = services.refund_request(
        payment=captured(), amount_minor=amount, reason="r", requested_by=finance, request_key=new_request_key("test")
    )[0]
    job = Job.objects.get(func=services.REFUND_JOB)
    run_job(str(job.pk))
    job.refresh_from_db()
    refund.refresh_from_db()
    assert job.status == JobStatus.RETRYING and refund.status == RefundStatus.PROCESSING
    run_job(str(job.pk))  # the retry, once due
    refund.refresh_from_db()
    assert refund.status == RefundStatus.SUCCEEDED
    assert SimulatedGatewayRecord.objects.filter(kind="refund", idempotency_key=refund.public_id).count() == 1


def test_a_duplicate_refund_run_refunds_nothing_more(captured, finance):
    refund = run_refund_jobs(
        services.refund_request(
            payment=captured(),
            amount_minor=10_00,
            reason="r",
            requested_by=finance,
            request_key=new_request_key("test"),
        )[0]
    )
    events = refund.events.count()
    assert refund_payment(refund.pk) == {"skipped": "nothing to refund"}
    assert refund.events.count() == events
    assert SimulatedGatewayRecord.objects.filter(kind="refund").count() == 1


# --- manual settlement of unknown payments -------------------------------------------------------


@pytest.fixture
def unknown_payment(make_payment):
    payment = make_payment(payment_method="tok_error")
    process_payment(payment.pk)
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.UNKNOWN
    return payment


def test_manual_settlement_needs_a_second_person(unknown_payment, operator, approver):
    settlement = services.settlement_request(
        payment=unknown_payment,
        settle_as="failed",
        reason="processor says no charge",
        requested_by=operator,
        request_key=new_request_key("test"),
    )[0]
    unknown_payment.refresh_from_db()
    assert unknown_payment.status == PaymentStatus.UNKNOWN
    with pytest.raises(ValidationError, match="already has"):
        services.settlement_request(
            payment=unknown_payment,
            settle_as="failed",
            reason="x",
            requested_by=operator,
            request_key=new_request_key("test"),
        )
    with pytest.raises(ValidationError, match="permission"):
        services.settlement_approve(settlement=settlement, approver=operator)
    services.settlement_approve(settlement=settlement, approver=approver, note="confirmed on the processor dashboard")
    unknown_payment.refresh_from_db()
    assert unknown_payment.status == PaymentStatus.FAILED
    assert unknown_payment.events.last().actor == approver
    assert list(AuditEntry.objects.filter(object_id=str(unknown_payment.pk)).values_list("action", flat=True)) == [
        "settlement_approve",
        "settlement_request",
    ]


def test_manual_settlement_refuses_self_approval_in_the_database(unknown_payment, operator):
    settlement = services.settlement_request(
        payment=unknown_payment,
        settle_as="succeeded",
        reason="seen in settlement file",
        gateway_reference="ch_3Kx",
        requested_by=operator,
        request_key=new_request_key("test"),
    )[0]
    with pytest.raises(IntegrityError), transaction.atomic():
        SettlementRequest.objects.filter(pk=settlement.pk).update(decided_by=operator)


def test_manual_settlement_needs_a_reason_and_an_unknown_payment(captured, unknown_payment, operator):
    with pytest.raises(ValidationError, match="reason"):
        services.settlement_request(
            payment=unknown_payment,
            settle_as="failed",
            reason="",
            requested_by=operator,
            request_key=new_request_key("test"),
        )
    with pytest.raises(ValidationError, match="not unknown"):
        services.settlement_request(
            payment=captured(),
            settle_as="failed",
            reason="x",
            requested_by=operator,
            request_key=new_request_key("test"),
        )
    assert SettlementRequest.objects.count() == 0


def test_splitting_a_large_refund_into_small_ones_still_needs_a_second_person(captured, finance, settings):
    settings.PAYMENTS_REFUND_APPROVAL_THRESHOLD = {"default": "50"}
    payment = captured()
    first = services.refund_request(
        payment=payment, amount_minor=30_00, reason="part 1", requested_by=finance, request_key=new_request_key("test")
    )[0]
    second = services.refund_request(
        payment=payment, amount_minor=20_00, reason="part 2", requested_by=finance, request_key=new_request_key("test")
    )[0]
    assert first.status == RefundStatus.APPROVED
    assert second.status == RefundStatus.REQUESTED and second.needs_approval


def test_settling_as_succeeded_needs_the_charge_reference_and_then_refunds_work(
    make_payment, operator, approver, finance
):
    payment = make_payment(payment_method="tok_timeout", amount_minor=50_00)
    process_payment(payment.pk)
    with pytest.raises(ValidationError, match="charge reference"):
        services.settlement_request(
            payment=payment,
            settle_as="succeeded",
            reason="seen",
            requested_by=operator,
            request_key=new_request_key("test"),
        )
    charge = SimulatedGatewayRecord.objects.get(kind="charge")
    settlement = services.settlement_request(
        payment=payment,
        settle_as="succeeded",
        reason="in the settlement file",
        gateway_reference=charge.reference,
        requested_by=operator,
        request_key=new_request_key("test"),
    )[0]
    services.settlement_approve(settlement=settlement, approver=approver, note="matches the file")
    payment.refresh_from_db()
    attempt = payment.attempts.get()
    assert (payment.status, attempt.outcome, attempt.gateway_reference) == ("succeeded", "succeeded", charge.reference)
    refund = run_refund_jobs(
        services.refund_request(
            payment=payment,
            amount_minor=10_00,
            reason="return",
            requested_by=finance,
            request_key=new_request_key("test"),
        )[0]
    )
    assert refund.status == RefundStatus.SUCCEEDED


def test_settling_as_failed_closes_the_unknown_attempt(unknown_payment, operator, approver):
    settlement = services.settlement_request(
        payment=unknown_payment,
        settle_as="failed",
        reason="nothing at the processor",
        requested_by=operator,
        request_key=new_request_key("test"),
    )[0]
    services.settlement_approve(settlement=settlement, approver=approver, note="ok")
    assert unknown_payment.attempts.get().outcome == "not_found"
