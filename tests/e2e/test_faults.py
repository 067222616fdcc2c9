"""Faults with real workers, real PostgreSQL, real Redis and the processor service over HTTP:
a worker killed mid-charge, a flushed Redis, the processor down or not answering in time, and
every kind of job run twice. In each, a payment is charged once and its history written once.

The sweeper is run by the test itself (jobs_sweep in the wait loop), with small
JOBS_STALE_AFTER_SECONDS / JOBS_HEARTBEAT_SECONDS here and in the workers' environment.
"""

from collections import Counter
from datetime import timedelta

import django_rq
import pytest
from django.conf import settings
from django.db.models import F
from rq import Worker
from rq.job import Job as RQJob

from backoffice.models import Job, JobStatus
from backoffice.runner import run_job
from backoffice.services import job_push_rollback_unsafe
from backoffice.sweeper import SweepReport, jobs_sweep
from payments.jobs import process_payment, recover_payment
from payments.models import Payment
from payments.states import AttemptOutcome, PaymentStatus
from processor.launch import ProcessorClient
from tests.helpers import PROCFILE_WORKER_CLASS, run_at_once, wait_until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # Row locks under real concurrency, and worker processes that see the test's commits.
    pytest.mark.needs_postgres,
]

HEARTBEAT = {
    "JOBS_HEARTBEAT_SECONDS": 0.2,
    "JOBS_STALE_AFTER_SECONDS": 2,
    # The webhook timings the start-up check requires with so short a stale time.
    "WEBHOOKS_TIMEOUT_SECONDS": 0.5,
    "WEBHOOKS_TRY_IN_FLIGHT_SECONDS": 1.5,
}
WORKER_CLASSES = sorted({"rq.worker.Worker", "rq.worker.SimpleWorker", PROCFILE_WORKER_CLASS})


@pytest.fixture
def short_heartbeat(settings):
    for name, value in HEARTBEAT.items():
        setattr(settings, name, value)


def processing_job(payment) -> Job:
    return Job.objects.get(func="payments.jobs.process_payment", object_id=str(payment.pk))


def processor_charges(payment) -> list[dict]:
    """The charges the processor holds for any attempt of this payment."""
    processor = ProcessorClient(settings.PAYMENTS_PROCESSOR_URL)
    return [op for op in processor.operations(f"{payment.public_id}_") if op["object"] == "charge"]


def charges_of(payment) -> int:
    return len(processor_charges(payment))


def event_trail(payment) -> list[str]:
    return list(payment.events.order_by("created_at", "id").values_list("to_status", flat=True))


def assert_charged_once_with_one_history(payment) -> None:
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert charges_of(payment) == 1
    attempt = payment.attempts.get()
    assert attempt.outcome == AttemptOutcome.SUCCEEDED
    [charge] = processor_charges(payment)
    assert (charge["idempotency_key"], charge["id"]) == (attempt.idempotency_key, attempt.gateway_reference)
    trail = event_trail(payment)
    assert trail in (["pending", "processing", "succeeded"], ["pending", "processing", "unknown", "succeeded"])
    notifications = Counter(payment.notifications.values_list("event_type", "channel", "destination"))
    assert all(count == 1 for count in notifications.values()), notifications


def sweep_until(predicate, *, timeout: float, message: str) -> SweepReport:
    """Run the sweeper, as the cron would, until the predicate holds; the reports' totals."""
    total = SweepReport()

    def swept_and_done():
        report = jobs_sweep()
        for name in ("pushed", "repushed", "recovered", "failed"):
            setattr(total, name, getattr(total, name) + getattr(report, name))
        return predicate()

    wait_until(swept_and_done, timeout=timeout, interval=0.2, message=message)
    return total


# --- a worker killed in the middle of a job ---------------------------------------------------


@pytest.mark.parametrize(
    "worker_class, kill_when",
    [(worker_class, "after_the_gateway_charged") for worker_class in WORKER_CLASSES]
    + [(PROCFILE_WORKER_CLASS, "before_the_gateway_answered")],
)
def test_a_worker_killed_mid_job_is_retried_on_a_new_worker_and_charges_once(
    make_payment, start_worker, start_processor, short_heartbeat, worker_class, kill_when
):
    start_processor(PROCESSOR_LATENCY_MS=3000, read_timeout=10)
    doomed = start_worker("payments", worker_class=worker_class, **HEARTBEAT)
    payment = make_payment()
    job = processing_job(payment)

    def mid_job():
        job.refresh_from_db()
        attempt = payment.attempts.first()
        if job.status != JobStatus.RUNNING or attempt is None:
            return False
        # The processor records the charge half-way through its latency.
        charged = any(charge["idempotency_key"] == attempt.idempotency_key for charge in processor_charges(payment))
        return charged == (kill_when == "after_the_gateway_charged")

    wait_until(mid_job, timeout=60, interval=0.05, message=f"the job to be running, {kill_when}")
    doomed.kill()

    payment.refresh_from_db()
    job.refresh_from_db()
    assert payment.status == PaymentStatus.PROCESSING  # killed before the answer was applied
    assert (job.status, job.attempts) == (JobStatus.RUNNING, 1)
    dead_worker = job.worker_name

    start_worker("payments", worker_class=worker_class, **HEARTBEAT)
    # The runner writes the job's outcome just after the payment's: wait for both, or a busy
    # machine sees the payment succeeded while its job is still being closed.
    report = sweep_until(
        lambda: (
            Payment.objects.get(pk=payment.pk).status == PaymentStatus.SUCCEEDED
            and Job.objects.get(pk=job.pk).status != JobStatus.RUNNING
        ),
        timeout=90,
        message="the sweeper to retry the job on the new worker",
    )

    assert report.recovered == 1 and report.failed == 0
    job.refresh_from_db()
    assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 2)
    assert job.worker_name != dead_worker
    assert_charged_once_with_one_history(payment)
    assert event_trail(payment) == ["pending", "processing", "succeeded"]


def test_a_worker_killed_right_after_taking_a_job_loses_nothing(make_payment, start_worker, settings):
    settings.JOBS_QUEUED_GRACE_SECONDS = 30
    doomed = start_worker(worker_class="tests.workers.DiesRightAfterTakingAJob")
    payment = make_payment()
    job = processing_job(payment)
    wait_until(lambda: doomed.process.poll() is not None, timeout=60, message="the worker to die with the job")

    # RQ still calls it queued, but no queue list holds it and no worker runs it.
    job.refresh_from_db()
    assert (job.status, job.attempts) == (JobStatus.QUEUED, 0)
    rq_job = RQJob.fetch(str(job.pk), connection=django_rq.get_connection("payments"))
    assert rq_job.get_status() == "queued"
    assert str(job.pk) not in django_rq.get_queue("payments").job_ids
    start_worker()
    assert jobs_sweep().repushed == 0  # within the grace it could still be on its way

    Job.objects.filter(pk=job.pk).update(queued_at=F("queued_at") - timedelta(seconds=30))  # the grace passes
    assert jobs_sweep().repushed == 1  # the first sweep after the grace

    wait_until(
        lambda: (
            Payment.objects.get(pk=payment.pk).status == PaymentStatus.SUCCEEDED
            and Job.objects.get(pk=job.pk).status == JobStatus.SUCCEEDED
        ),
        timeout=60,
        message="the re-pushed job to run on the live worker, with no further sweep",
    )
    job.refresh_from_db()
    assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 1)
    assert_charged_once_with_one_history(payment)


def test_a_worker_killed_in_the_middle_of_a_batch_loses_nothing_and_charges_each_payment_once(
    make_payment, start_worker, start_processor, short_heartbeat
):
    start_processor(PROCESSOR_LATENCY_MS=3000, read_timeout=10)
    payments = [make_payment(amount_minor=1000 + n) for n in range(12)]
    doomed = start_worker("payments", **HEARTBEAT)  # batching: the default

    def some_charged_all_running():
        jobs = [processing_job(payment) for payment in payments]
        charged = sum(charges_of(payment) for payment in payments)
        return all(job.status == JobStatus.RUNNING for job in jobs) and 0 < charged

    # One worker took them all in one batch; the processor has recorded charges half-way.
    wait_until(some_charged_all_running, timeout=60, interval=0.05, message="a batch in flight")
    doomed.kill()

    assert all(Payment.objects.get(pk=p.pk).status == PaymentStatus.PROCESSING for p in payments)
    assert {processing_job(p).worker_name for p in payments} == {processing_job(payments[0]).worker_name}
    start_worker("payments", **HEARTBEAT)
    # Finished: each payment applied, then (a statement later) each Job's outcome written.
    report = sweep_until(
        lambda: (
            all(Payment.objects.get(pk=p.pk).status == PaymentStatus.SUCCEEDED for p in payments)
            and not Job.objects.filter(func="payments.jobs.process_payment", status=JobStatus.RUNNING).exists()
        ),
        timeout=120,
        message="the sweeper to retry every job of the dead batch",
    )

    assert report.recovered == len(payments) and report.failed == 0
    for payment in payments:
        job = processing_job(payment)
        assert (job.status, job.attempts, job.result) == (JobStatus.SUCCEEDED, 2, {"status": "succeeded"})
        assert_charged_once_with_one_history(payment)
        assert event_trail(payment) == ["pending", "processing", "succeeded"]


# --- Redis loses its queues -------------------------------------------------------------------


def test_jobs_lost_by_a_flushed_redis_are_pushed_again_and_each_runs_once(make_payment, start_worker, start_processor):
    # One slow worker taking one payment per job: while it charges the first payment, the
    # others wait in Redis. (A batching worker would have claimed them all from the database:
    # nothing of theirs would be left in Redis to lose.)
    start_processor(PROCESSOR_LATENCY_MS=2000, read_timeout=10)
    start_worker("payments", JOBS_BATCH_ENABLED="false")
    payments = [make_payment() for _ in range(5)]
    wait_until(
        lambda: Job.objects.filter(func="payments.jobs.process_payment", status=JobStatus.RUNNING).exists(),
        timeout=60,
        message="the worker to start on the first payment",
    )
    waiting = django_rq.get_queue("payments").count
    assert waiting >= 2

    django_rq.get_connection("payments").flushdb()  # Redis restarts without persistence

    assert django_rq.get_queue("payments").count == 0
    report = sweep_until(
        lambda: all(Payment.objects.get(pk=p.pk).status == PaymentStatus.SUCCEEDED for p in payments),
        timeout=120,
        message="every payment to be processed",
    )

    assert report.repushed >= waiting
    for payment in payments:
        assert_charged_once_with_one_history(payment)
        job = processing_job(payment)
        assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 1)


# --- the processor down, or not answering in time ---------------------------------------------

LOOKUPS_LATER = {"PAYMENTS_RECOVERY_SCHEDULE_SECONDS": "1,1,1,1,1"}


def test_payments_sent_while_the_processor_is_down_go_unknown_then_fail_by_lookup_charging_nothing(
    make_payment, start_worker, start_processor, settings
):
    settings.PAYMENTS_RECOVERY_SCHEDULE_SECONDS = [1, 1, 1, 1, 1]
    processor = start_processor()
    processor.stop()
    start_worker("payments", **LOOKUPS_LATER)
    payments = [make_payment() for _ in range(3)]
    wait_until(
        lambda: all(Payment.objects.get(pk=p.pk).status == PaymentStatus.UNKNOWN for p in payments),
        timeout=60,
        message="the payments to go unknown",
    )
    assert {p.attempts.get().error_code for p in payments} == {"connection_error"}

    processor.start()
    sweep_until(
        lambda: all(Payment.objects.get(pk=p.pk).status == PaymentStatus.FAILED for p in payments),
        timeout=90,
        message="the lookups to find nothing and fail the payments",
    )
    for payment in payments:
        assert charges_of(payment) == 0
        assert event_trail(payment) == ["pending", "processing", "unknown", "failed"]
        assert payment.attempts.get().outcome == AttemptOutcome.NOT_FOUND
    later = make_payment()
    wait_until(lambda: Payment.objects.get(pk=later.pk).status == PaymentStatus.SUCCEEDED, timeout=60, message="ok")
    assert_charged_once_with_one_history(later)


def test_charges_the_processor_took_without_answering_in_time_are_found_by_lookup_and_charged_once(
    make_payment, start_worker, start_processor, settings
):
    settings.PAYMENTS_RECOVERY_SCHEDULE_SECONDS = [1, 1, 1, 1, 1]
    processor = start_processor(PROCESSOR_TIMEOUT_RATE=1, read_timeout=3)
    start_worker("payments", **LOOKUPS_LATER)
    payments = [make_payment() for _ in range(3)]
    wait_until(
        lambda: all(Payment.objects.get(pk=p.pk).status == PaymentStatus.UNKNOWN for p in payments),
        timeout=60,
        message="the payments to go unknown",
    )
    assert {p.attempts.get().error_code for p in payments} == {"timeout"}
    assert all(charges_of(payment) == 1 for payment in payments)  # recorded, never answered

    processor.stop()
    processor.start(PROCESSOR_TIMEOUT_RATE=0)  # the processor answers again, its ledger intact
    sweep_until(
        lambda: all(Payment.objects.get(pk=p.pk).status == PaymentStatus.SUCCEEDED for p in payments),
        timeout=90,
        message="the lookups to find the charges",
    )
    for payment in payments:
        assert_charged_once_with_one_history(payment)
        assert event_trail(payment) == ["pending", "processing", "unknown", "succeeded"]


# --- every kind of job, run twice -------------------------------------------------------------


def test_process_payment_run_twice_at_once_and_again_later_charges_once(make_payment, start_processor):
    start_processor(PROCESSOR_LATENCY_MS=400, read_timeout=10)
    payment = make_payment()

    run_at_once(process_payment, payment.pk)
    assert process_payment(payment.pk) == {"skipped": "nothing to process"}

    assert_charged_once_with_one_history(payment)
    assert event_trail(payment) == ["pending", "processing", "succeeded"]


def test_recover_payment_run_twice_at_once_and_again_later_resolves_once(make_payment, start_processor):
    start_processor(PROCESSOR_LATENCY_MS=200)
    payment = make_payment(payment_method="tok_timeout")
    assert process_payment(payment.pk) == {"status": "unknown"}

    assert run_at_once(recover_payment, payment.pk) == [{"status": "succeeded"}] * 2
    assert recover_payment(payment.pk) == {"skipped": "not unknown"}

    assert_charged_once_with_one_history(payment)
    assert event_trail(payment) == ["pending", "processing", "unknown", "succeeded"]
    assert payment.attempts.get().lookups == 1


def test_a_recovery_that_finds_no_charge_fails_the_payment_once(make_payment):
    payment = make_payment(payment_method="tok_error")
    process_payment(payment.pk)

    run_at_once(recover_payment, payment.pk)
    recover_payment(payment.pk)

    payment.refresh_from_db()
    assert payment.status == PaymentStatus.FAILED
    assert event_trail(payment) == ["pending", "processing", "unknown", "failed"]
    assert charges_of(payment) == 0


def test_run_job_delivered_twice_in_process_runs_the_body_once(make_payment):
    payment = make_payment()
    job = processing_job(payment)

    outcomes = run_at_once(run_job, str(job.pk))
    outcomes.append(run_job(str(job.pk)))

    assert {"status": "succeeded"} in outcomes
    assert all(outcome == {"status": "succeeded"} or "skipped" in outcome for outcome in outcomes)
    job.refresh_from_db()
    assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 1)
    assert_charged_once_with_one_history(payment)


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_one_job_delivered_to_two_real_workers_runs_once(make_payment, start_worker, start_processor, worker_class):
    start_processor(PROCESSOR_LATENCY_MS=1500, read_timeout=10)
    for _ in range(2):
        start_worker("payments", worker_class=worker_class)
    queue = django_rq.get_queue("payments")
    wait_until(lambda: len(Worker.all(queue=queue)) == 2, timeout=60, message="both workers to listen")
    payment = make_payment()  # pushed on commit
    job = processing_job(payment)
    assert job_push_rollback_unsafe(job_id=job.pk, queue="payments")  # and delivered a second time

    wait_until(lambda: len(queue.fetch_job(str(job.pk)).results()) == 2, timeout=60, message="both deliveries to end")

    answers = [result.return_value for result in queue.fetch_job(str(job.pk)).results()]
    assert sorted(answers, key=str) == [{"skipped": "running"}, {"status": "succeeded"}]
    job.refresh_from_db()
    assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 1)
    assert_charged_once_with_one_history(payment)


def test_a_redis_restart_in_the_middle_of_a_batch_loses_nothing_and_charges_each_payment_once(
    make_payment, start_worker, start_processor
):
    start_processor(PROCESSOR_LATENCY_MS=2000, read_timeout=10)
    start_worker("payments", **HEARTBEAT)  # batching: the default
    payments = [make_payment(amount_minor=3000 + n) for n in range(8)]
    wait_until(
        lambda: Job.objects.filter(func="payments.jobs.process_payment", status=JobStatus.RUNNING).count() == 8,
        timeout=60,
        interval=0.05,
        message="one batch with every payment in flight",
    )

    django_rq.get_connection("payments").flushdb()  # Redis restarts without persistence, mid-batch
    later = make_payment(amount_minor=4000)  # pushed to the empty Redis

    sweep_until(
        lambda: (
            all(Payment.objects.get(pk=p.pk).status == PaymentStatus.SUCCEEDED for p in [*payments, later])
            and not Job.objects.filter(func="payments.jobs.process_payment", status=JobStatus.RUNNING).exists()
        ),
        timeout=120,
        message="the batch and the later payment to finish",
    )
    for payment in [*payments, later]:
        assert_charged_once_with_one_history(payment)
        assert processing_job(payment).status == JobStatus.SUCCEEDED
