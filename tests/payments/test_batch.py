"""Payments processed many at a time (payments.batch driven by backoffice.batch): each Job
keeps its own claim, attempt count, timings and result; each payment goes through the same
states, events, attempts and keys as one at a time; one bad payment fails only its own Job;
the RQ copies of the Jobs a batch took are gone from the queue."""

from collections import Counter

import django_rq
import pytest

from backoffice.models import Job, JobStatus
from backoffice.runner import run_job
from payments import batch as payments_batch
from payments.gateways.simulated import SimulatedGateway
from payments.jobs import process_payment
from payments.models import Payment, PaymentAttempt, SimulatedGatewayRecord
from payments.states import AttemptOutcome, PaymentStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.needs_postgres]


@pytest.fixture(autouse=True)
def _batching_on(settings):
    settings.JOBS_BATCH_ENABLED = True


TOKENS = ["tok_success", "tok_decline", "tok_timeout", "tok_error", "tok_success", "tok_success"]
EXPECTED = {
    "tok_success": PaymentStatus.SUCCEEDED,
    "tok_decline": PaymentStatus.FAILED,
    "tok_timeout": PaymentStatus.UNKNOWN,
    "tok_error": PaymentStatus.UNKNOWN,
}


def processing_job(payment) -> Job:
    return Job.objects.get(func="payments.jobs.process_payment", object_id=str(payment.pk))


def trail(payment) -> list[str]:
    return list(payment.events.order_by("created_at", "id").values_list("to_status", flat=True))


def history(payment) -> tuple:
    """What a payment's processing leaves behind, without ids and times."""
    payment.refresh_from_db()
    attempts = [(a.number, a.outcome, a.error_code, a.error_message) for a in payment.attempts.all()]
    events = list(payment.events.order_by("created_at", "id").values_list("to_status", "actor_label", "reason"))
    notifications = sorted(payment.notifications.values_list("event_type", "channel"))
    return payment.status, events, attempts, notifications


def test_one_run_processes_every_due_payment_each_job_with_its_own_record(make_payment):
    payments = [make_payment(payment_method=token) for token in TOKENS]
    assert django_rq.get_queue("payments").count == len(TOKENS)

    leader = str(processing_job(payments[0]).pk)
    assert run_job(leader) == {"status": "succeeded"}

    for payment, token in zip(payments, TOKENS, strict=True):
        payment.refresh_from_db()
        assert payment.status == EXPECTED[token]
        attempt = payment.attempts.get()
        assert attempt.idempotency_key == f"{payment.public_id}_a1"
        job = processing_job(payment)
        assert (job.status, job.attempts, job.last_error) == (JobStatus.SUCCEEDED, 1, "")
        assert job.result == {"status": EXPECTED[token]}
        assert job.started_at <= job.finished_at and job.worker_name
    # The batch took the other Jobs' RQ copies off the queue (the leader's was being run; here
    # the test ran it, so it is still there).
    process_jobs = {str(processing_job(payment).pk) for payment in payments}
    assert process_jobs & set(django_rq.get_queue("payments").job_ids) == {leader}
    assert SimulatedGatewayRecord.objects.count() == TOKENS.count("tok_success") + 2  # + decline + timeout


def test_a_batch_leaves_the_same_history_as_one_payment_at_a_time(make_payment, settings):
    settings.JOBS_BATCH_ENABLED = False
    alone = [make_payment(payment_method=token) for token in TOKENS]
    for payment in alone:
        run_job(str(processing_job(payment).pk))
    settings.JOBS_BATCH_ENABLED = True
    batched = [make_payment(payment_method=token) for token in TOKENS]
    run_job(str(processing_job(batched[0]).pk))

    assert [history(p) for p in batched] == [history(p) for p in alone]
    assert trail(batched[0]) == ["pending", "processing", "succeeded"]
    # unknown answers scheduled their recovery, one each
    recoveries = Counter(Job.objects.filter(func="payments.jobs.recover_payment").values_list("object_id", flat=True))
    assert sorted(recoveries.values()) == [1] * 4


def test_a_payment_whose_call_raises_fails_only_its_own_job_and_keeps_its_key(make_payment, monkeypatch, settings):
    settings.JOBS_RETRY_BACKOFF_SECONDS = [60.0]  # not due again within this batch
    payments = [make_payment(amount_minor=1000 + n) for n in range(4)]
    real_charge = SimulatedGateway.charge

    def charge(self, request):
        if request.amount_minor == 1002:
            raise ConnectionResetError("the line dropped")
        return real_charge(self, request)

    monkeypatch.setattr(SimulatedGateway, "charge", charge)
    run_job(str(processing_job(payments[0]).pk))

    broken = processing_job(payments[2])
    assert (broken.status, broken.attempts) == (JobStatus.RETRYING, 1)
    assert broken.last_error == "ConnectionResetError: the line dropped" and "charge" in broken.traceback
    payments[2].refresh_from_db()
    assert payments[2].status == PaymentStatus.PROCESSING  # its attempt stays open, with its key
    for payment in payments[:2] + payments[3:]:
        assert processing_job(payment).status == JobStatus.SUCCEEDED

    monkeypatch.setattr(SimulatedGateway, "charge", real_charge)
    Job.objects.filter(pk=broken.pk).update(run_at=broken.run_at.replace(year=2000))
    run_job(str(broken.pk))
    payments[2].refresh_from_db()
    assert payments[2].status == PaymentStatus.SUCCEEDED
    assert list(payments[2].attempts.values_list("idempotency_key", flat=True)) == [f"{payments[2].public_id}_a1"]
    assert processing_job(payments[2]).attempts == 2


def test_when_the_bulk_apply_fails_the_answers_are_applied_one_by_one(make_payment, monkeypatch):
    payments = [make_payment() for _ in range(3)]

    def broken(**kwargs):
        raise RuntimeError("bulk path broken")

    monkeypatch.setattr(payments_batch, "payments_charge_results_apply", broken)
    monkeypatch.setattr(payments_batch, "payments_processing_start", broken)
    run_job(str(processing_job(payments[0]).pk))

    for payment in payments:
        payment.refresh_from_db()
        assert payment.status == PaymentStatus.SUCCEEDED
        assert trail(payment) == ["pending", "processing", "succeeded"]
        assert processing_job(payment).result == {"status": "succeeded"}


def test_two_jobs_for_one_payment_in_one_batch_charge_it_once(make_payment):
    payment = make_payment()
    from backoffice.services import job_enqueue

    job_enqueue(func="payments.jobs.process_payment", kwargs={"payment_id": payment.pk}, queue="payments")
    leader = Job.objects.filter(object_id=str(payment.pk)).first()
    run_job(str(leader.pk))

    assert set(Job.objects.filter(func="payments.jobs.process_payment").values_list("status", flat=True)) == {
        JobStatus.SUCCEEDED
    }
    # The second either found nothing to do or sent the open attempt again under its key.
    for job in Job.objects.filter(func="payments.jobs.process_payment"):
        assert job.result in ({"status": "succeeded"}, {"skipped": "nothing to process"})
    assert SimulatedGatewayRecord.objects.count() == 1
    assert trail(payment) == ["pending", "processing", "succeeded"]


def test_a_batch_takes_only_due_jobs_of_its_function(make_payment):
    first, later = make_payment(), make_payment()
    Job.objects.filter(pk=processing_job(later).pk).update(run_at=processing_job(later).run_at.replace(year=2999))
    run_job(str(processing_job(first).pk))
    assert processing_job(later).status in (JobStatus.QUEUED, JobStatus.PENDING)
    assert Payment.objects.get(pk=later.pk).status == PaymentStatus.PENDING


def test_a_payment_left_processing_by_a_dead_batch_is_sent_again_under_its_key(make_payment):
    payments = [make_payment() for _ in range(3)]
    # A batch died after starting them (attempts open) and before any answer was applied.
    payments_batch.payments_processing_start(payment_ids=[p.pk for p in payments])
    assert PaymentAttempt.objects.filter(outcome=AttemptOutcome.PENDING).count() == 3
    for payment in payments:
        assert process_payment(payment.pk) == {"status": "succeeded"}
        assert payment.attempts.get().idempotency_key == f"{payment.public_id}_a1"
    assert SimulatedGatewayRecord.objects.count() == 3


def test_each_batched_job_shows_its_own_outcome_in_the_admin_and_counts_in_the_metrics(
    make_payment, monkeypatch, settings, admin_client
):
    settings.JOBS_RETRY_BACKOFF_SECONDS = [60.0]
    payments = [make_payment(amount_minor=2000 + n) for n in range(4)]
    real_charge = SimulatedGateway.charge

    def charge(self, request):
        if request.amount_minor == 2001:
            raise ConnectionResetError("the line dropped")
        return real_charge(self, request)

    monkeypatch.setattr(SimulatedGateway, "charge", charge)
    run_job(str(processing_job(payments[0]).pk))

    broken, fine = processing_job(payments[1]), processing_job(payments[2])
    broken_page = admin_client.get(f"/admin/backoffice/job/{broken.pk}/change/").content.decode()
    fine_page = admin_client.get(f"/admin/backoffice/job/{fine.pk}/change/").content.decode()
    assert "Retrying" in broken_page and "ConnectionResetError: the line dropped" in broken_page
    assert "Succeeded" in fine_page and "the line dropped" not in fine_page and "succeeded" in fine_page
    assert broken.worker_name and broken.started_at and fine.finished_at and fine.started_at <= fine.finished_at
    metrics = admin_client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode().splitlines()
    labels = 'func="process_payment",outcome="{}",queue="payments"'
    assert f"paydesk_jobs_finished_total{{{labels.format('succeeded')}}} 3.0" in metrics
    assert f"paydesk_jobs_finished_total{{{labels.format('retrying')}}} 1.0" in metrics
    assert 'paydesk_job_duration_seconds_count{func="process_payment",queue="payments"} 4.0' in metrics
    assert 'paydesk_processor_call_seconds_count{operation="charge",outcome="error"} 1.0' in metrics
