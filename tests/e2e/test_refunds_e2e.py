"""A real worker process sends approved refunds of every simulated gateway outcome, and a
refund job delivered twice refunds once."""

import pytest

from backoffice.models import Job, JobStatus
from backoffice.runner import run_job
from backoffice.sweeper import jobs_sweep
from payments import services
from payments.jobs import process_payment
from payments.models import Refund, new_request_key
from payments.selectors import refund_remaining_minor
from payments.states import PaymentStatus, RefundStatus
from tests.factories import UserFactory
from tests.helpers import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.needs_postgres]

# amount's last three digits -> (refund end state, error code): see processor/server.py
OUTCOMES = {
    10_00: (RefundStatus.SUCCEEDED, ""),  # approved
    10_13: (RefundStatus.FAILED, "refund_declined"),  # declined by the processor
    10_14: (RefundStatus.SUCCEEDED, ""),  # recorded, the answer timed out; the retry finds it
    10_15: (RefundStatus.SUCCEEDED, ""),  # a 503 first, nothing recorded; the retry refunds
}


def settled(refunds) -> bool:
    jobs_sweep()  # pushes the retries once due, as the cron does
    return all(
        Refund.objects.get(pk=refund.pk).status in (RefundStatus.SUCCEEDED, RefundStatus.FAILED) for refund in refunds
    )


def test_a_worker_sends_refunds_of_every_gateway_outcome_once(make_payment, start_worker, http_processor):
    finance = UserFactory(username="e2e-finance", roles=["Finance"])
    payment = make_payment(amount_minor=100_00)
    process_payment(payment.pk)
    refunds = [
        services.refund_request(
            payment=payment,
            amount_minor=amount,
            reason=f"e2e {amount}",
            requested_by=finance,
            request_key=new_request_key("test"),
        )[0]
        for amount in OUTCOMES
    ]
    start_worker("payments")

    wait_until(lambda: settled(refunds), timeout=60, message="every refund settled")

    for refund in refunds:
        refund.refresh_from_db()
        assert (refund.status, refund.error_code) == OUTCOMES[refund.amount_minor]
        # one record at the gateway under the refund's own key, whatever the retries
        assert len(http_processor.operations(refund.public_id)) == 1
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.PARTIALLY_REFUNDED
    # the declined refund freed its amount
    assert refund_remaining_minor(payment) == 100_00 - (10_00 + 10_14 + 10_15)

    # a duplicate delivery of every refund job, after the fact, changes nothing
    events = {refund.pk: refund.events.count() for refund in refunds}
    for job in Job.objects.filter(func=services.REFUND_JOB):
        Job.objects.filter(pk=job.pk).update(status=JobStatus.QUEUED)
        run_job(str(job.pk))
    for refund in refunds:
        assert refund.events.count() == events[refund.pk]
    assert sum(len(http_processor.operations(refund.public_id)) for refund in refunds) == 4


def test_a_refund_never_answered_is_looked_up_by_its_key_then_settled_by_two_people(
    make_payment, start_worker, http_processor
):
    finance = UserFactory(username="e2e-finance", roles=["Finance"])
    operator = UserFactory(username="e2e-operator", roles=["Operators"])
    approver = UserFactory(username="e2e-approver", roles=["Approvers"])
    payment = make_payment(amount_minor=100_00)
    process_payment(payment.pk)

    def refund_of(amount_minor: int) -> Refund:
        return services.refund_request(
            payment=payment,
            amount_minor=amount_minor,
            reason=f"e2e {amount_minor}",
            requested_by=finance,
            request_key=new_request_key("test"),
        )[0]

    found = refund_of(10_16)  # recorded at the processor, never answered; a lookup finds it
    lost = refund_of(10_17)  # never answered, and lookups of it fail too
    start_worker(
        "payments",
        PAYMENTS_REFUND_SENDS=2,
        JOBS_RETRY_BACKOFF_SECONDS="0.2",
        PAYMENTS_RECOVERY_SCHEDULE_SECONDS="0.2,0.2",
        PAYMENTS_PROCESSOR_READ_TIMEOUT_SECONDS=1,
    )

    def recovery_done() -> bool:
        jobs_sweep()  # pushes the resends and the lookups once due, as the sweeper process does
        found.refresh_from_db()
        lost.refresh_from_db()
        return found.status == RefundStatus.SUCCEEDED and lost.needs_review

    wait_until(recovery_done, timeout=90, message="one refund found by its key, the other flagged for review")

    assert (lost.status, lost.unclear_answers, lost.lookups) == (RefundStatus.UNKNOWN, 2, 2)
    assert found.gateway_reference and found.unclear_answers == 2
    settlement, _ = services.settlement_request(
        payment=payment,
        refund=lost,
        settle_as="succeeded",
        gateway_reference="seen on the processor's dashboard",
        reason="the processor's dashboard shows it refunded",
        requested_by=operator,
        request_key=new_request_key("test"),
    )
    services.settlement_approve(settlement=settlement, approver=approver, note="checked")

    lost.refresh_from_db()
    payment.refresh_from_db()
    assert lost.status == RefundStatus.SUCCEEDED
    assert list(lost.events.values_list("to_status", flat=True)) == [
        RefundStatus.REQUESTED,
        RefundStatus.APPROVED,
        RefundStatus.PROCESSING,
        RefundStatus.UNKNOWN,
        RefundStatus.SUCCEEDED,
    ]
    assert payment.status == PaymentStatus.PARTIALLY_REFUNDED
    assert refund_remaining_minor(payment) == 100_00 - 10_16 - 10_17
    # however many sends and lookups, one refund at the processor under each key
    assert len(http_processor.operations(found.public_id)) == 1
    assert len(http_processor.operations(lost.public_id)) == 1
