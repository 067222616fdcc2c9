"""Real `manage.py rqworker` processes (and the real cron) against real PostgreSQL and Redis:
payments of every test token reach the right end state.

The recovery lookups of `unknown` payments are scheduled for later (PAYMENTS_RECOVERY_SCHEDULE_SECONDS
in the workers' environment), so they are not pushed on commit: the sweeper, run by
`manage.py run_sweeper` as in the Procfile, pushes them once due.
"""

import subprocess
import sys

import pytest

from backoffice.models import Job, JobStatus
from payments.models import Payment
from payments.states import AttemptOutcome, PaymentStatus
from tests.helpers import PROCFILE_WORKER_CLASS, ROOT, wait_until, worker_environment

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # The worker processes must see the test's committed rows: a shared PostgreSQL database.
    pytest.mark.needs_postgres,
]

PROCESS_JOB = "payments.jobs.process_payment"
RECOVER_JOB = "payments.jobs.recover_payment"
# The worker classes `manage.py rqworker` must run correctly: rq's forking default (a
# work-horse per job) and SimpleWorker (jobs in the worker process itself).
WORKER_CLASSES = sorted({"rq.worker.Worker", "rq.worker.SimpleWorker", PROCFILE_WORKER_CLASS})
RECOVERY_LATER = {"PAYMENTS_RECOVERY_SCHEDULE_SECONDS": "1,1,1"}


@pytest.fixture
def start_cron():
    processes = []

    def start(**env):
        log = (ROOT / ".run").joinpath(f"test-cron-{len(processes)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "run_sweeper"],
            env=worker_environment(**env),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        processes.append((process, log))
        return process

    yield start
    for process, log in processes:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


def statuses(*payments) -> list[str]:
    return [Payment.objects.get(pk=payment.pk).status for payment in payments]


def event_trail(payment) -> list[str]:
    return list(payment.events.order_by("created_at", "id").values_list("to_status", flat=True))


def payment_jobs(payment, func):
    return Job.objects.filter(func=func, object_id=str(payment.pk), content_type__model="payment")


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_a_real_worker_takes_every_token_to_its_end_state(
    make_payment, start_worker, start_cron, http_processor, worker_class
):
    success, decline, timeout, error = (
        make_payment(payment_method=token) for token in ("tok_success", "tok_decline", "tok_timeout", "tok_error")
    )
    start_worker(worker_class=worker_class, **RECOVERY_LATER)

    wait_until(
        lambda: (
            statuses(success, decline, timeout, error)
            == [PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.UNKNOWN, PaymentStatus.UNKNOWN]
        ),
        timeout=60,
        message="the first attempts to be applied",
    )
    # The lookups wait for the sweeper: due in a second, pushed by nobody yet.
    for payment in (timeout, error):
        assert payment_jobs(payment, RECOVER_JOB).get().status == JobStatus.PENDING

    start_cron(JOBS_SWEEP_INTERVAL_SECONDS=1, **RECOVERY_LATER)
    wait_until(
        lambda: statuses(timeout, error) == [PaymentStatus.SUCCEEDED, PaymentStatus.FAILED],
        timeout=90,
        message="the recovery jobs to resolve the unknown payments",
    )

    for payment in (success, decline, timeout, error):
        payment.refresh_from_db()
    assert event_trail(success) == ["pending", "processing", "succeeded"]
    assert event_trail(decline) == ["pending", "processing", "failed"]
    assert event_trail(timeout) == ["pending", "processing", "unknown", "succeeded"]
    assert event_trail(error) == ["pending", "processing", "unknown", "failed"]

    attempts = {payment.payment_method: payment.attempts.get() for payment in (success, decline, timeout, error)}
    assert attempts["tok_success"].outcome == AttemptOutcome.SUCCEEDED
    assert attempts["tok_success"].gateway_reference.startswith("ch_")
    assert (attempts["tok_decline"].outcome, attempts["tok_decline"].error_code) == (
        AttemptOutcome.DECLINED,
        "card_declined",
    )
    assert attempts["tok_decline"].error_message == "The card was declined by the issuer."
    assert (attempts["tok_timeout"].outcome, attempts["tok_timeout"].lookups) == (AttemptOutcome.SUCCEEDED, 1)
    assert attempts["tok_timeout"].gateway_reference.startswith("ch_")
    assert (attempts["tok_error"].outcome, attempts["tok_error"].lookups) == (AttemptOutcome.NOT_FOUND, 1)

    # One charge each where the gateway took one; none where it never happened.
    charged = {
        op["payment_method"]: op["status"]
        for payment in (success, decline, timeout, error)
        for op in http_processor.operations(f"{payment.public_id}_")
    }
    assert charged == {"tok_success": "succeeded", "tok_decline": "declined", "tok_timeout": "succeeded"}

    expected_result = {success: "succeeded", decline: "failed", timeout: "unknown", error: "unknown"}
    for payment, status_after_the_charge in expected_result.items():
        process = payment_jobs(payment, PROCESS_JOB).get()
        assert (process.status, process.attempts) == (JobStatus.SUCCEEDED, 1)
        assert process.result == {"status": status_after_the_charge}
    for payment in (timeout, error):
        recovery = payment_jobs(payment, RECOVER_JOB).get()
        assert (recovery.status, recovery.attempts) == (JobStatus.SUCCEEDED, 1)
        assert recovery.queued_at >= recovery.run_at  # pushed when due, by the sweeper
    assert not Job.objects.exclude(status=JobStatus.SUCCEEDED).filter(queue="payments").exists()
