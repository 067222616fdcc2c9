"""The runner: what it records about each run, retries with back-off, duplicate deliveries,
and the staff actions on jobs (requeue, cancel) with their audit rows."""

import os
import socket
import time
import uuid
from datetime import timedelta

import django_rq
import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from backoffice.models import AuditEntry, Job, JobStatus
from backoffice.runner import run_job
from backoffice.services import job_cancel, job_enqueue, job_requeue
from tests.helpers import database_session_pid, end_database_session, run_at_once

# Job bodies the tests enqueue by dotted path. CALLS records every run of a body.
CALLS: list[dict] = []


def record_call(**kwargs):
    CALLS.append(kwargs)
    return {"seen": kwargs}


def fail_always(reason):
    CALLS.append({"reason": reason})
    raise ValueError(reason)


def fail_first_run(marker):
    CALLS.append({"marker": marker})
    if len([call for call in CALLS if call.get("marker") == marker]) == 1:
        raise ConnectionError("gateway unreachable")
    return {"ok": marker}


def sleep_then_record(seconds, marker):
    time.sleep(seconds)
    CALLS.append({"marker": marker})
    return {"slept": seconds}


def deliver_own_job_again(marker):
    """A body during which RQ delivers the same job a second time."""
    CALLS.append({"marker": marker})
    return run_job(str(Job.objects.get(kwargs__marker=marker).pk))


def taken_over_by_the_sweeper(marker):
    """A body whose worker was judged dead meanwhile: the sweeper put its job back to retrying."""
    CALLS.append({"marker": marker})
    Job.objects.filter(kwargs__marker=marker).update(status=JobStatus.RETRYING)
    return {"finished": "late"}


def return_a_set():
    return {"a", "b"}


def database_session():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return {"backend_pid": cursor.fetchone()[0], "pid": os.getpid()}


@pytest.fixture(autouse=True)
def _forget_calls():
    CALLS.clear()
    yield
    CALLS.clear()


@pytest.fixture
def enqueue(db):
    def make(body, max_attempts=None, **kwargs) -> Job:
        return job_enqueue(func=f"{__name__}.{body}", kwargs=kwargs, max_attempts=max_attempts)

    return make


def reloaded(job: Job) -> Job:
    job.refresh_from_db()
    return job


# --- what a run records -----------------------------------------------------------------------


def test_a_successful_run_records_status_attempt_timings_worker_and_result(enqueue):
    job = enqueue("record_call", payment_id=7)
    before = timezone.now()

    assert run_job(str(job.pk)) == {"status": "succeeded"}

    job = reloaded(job)
    assert job.status == JobStatus.SUCCEEDED
    assert job.attempts == 1
    assert before <= job.started_at <= job.finished_at <= timezone.now()
    assert job.heartbeat_at is not None
    assert job.duration_seconds >= 0
    assert job.worker_name == f"{socket.gethostname()}:{os.getpid()}"
    assert job.result == {"seen": {"payment_id": 7}}
    assert (job.last_error, job.traceback) == ("", "")
    assert CALLS == [{"payment_id": 7}]


def test_a_failed_run_records_the_error_and_traceback_and_retries_after_a_back_off(enqueue, settings):
    settings.JOBS_RETRY_BACKOFF_SECONDS = [10.0, 60.0]
    job = enqueue("fail_always", reason="card network down")

    assert run_job(str(job.pk)) == {"status": "retrying"}

    job = reloaded(job)
    assert job.status == JobStatus.RETRYING
    assert job.attempts == 1
    assert job.last_error == "ValueError: card network down"
    assert "fail_always" in job.traceback and "ValueError: card network down" in job.traceback
    assert 8.0 <= (job.run_at - job.finished_at).total_seconds() <= 12.0  # 10 s, +-20% jitter

    assert run_job(str(job.pk)) == {"status": "retrying"}  # pushed again by the sweeper once due

    job = reloaded(job)
    assert job.attempts == 2
    assert 48.0 <= (job.run_at - job.finished_at).total_seconds() <= 72.0


def test_retries_stop_at_max_attempts_and_the_job_stays_failed(enqueue):
    job = enqueue("fail_always", max_attempts=3, reason="declined by the bank")

    outcomes = [run_job(str(job.pk)) for _ in range(3)]

    assert outcomes == [{"status": "retrying"}, {"status": "retrying"}, {"status": "failed"}]
    job = reloaded(job)
    assert (job.status, job.attempts) == (JobStatus.FAILED, 3)
    assert job.last_error == "ValueError: declined by the bank"
    assert run_job(str(job.pk)) == {"skipped": "failed"}  # a late duplicate delivery
    assert reloaded(job).attempts == 3
    assert len(CALLS) == 3


def test_a_retry_that_succeeds_clears_the_error(enqueue):
    job = enqueue("fail_first_run", marker="m1")

    assert run_job(str(job.pk)) == {"status": "retrying"}
    assert reloaded(job).last_error == "ConnectionError: gateway unreachable"
    assert run_job(str(job.pk)) == {"status": "succeeded"}

    job = reloaded(job)
    assert (job.status, job.attempts, job.result) == (JobStatus.SUCCEEDED, 2, {"ok": "m1"})
    assert (job.last_error, job.traceback) == ("", "")


def test_a_result_json_cannot_carry_is_kept_as_its_repr_and_the_job_still_succeeds(enqueue):
    job = enqueue("return_a_set")

    assert run_job(str(job.pk)) == {"status": "succeeded"}

    job = reloaded(job)
    assert job.status == JobStatus.SUCCEEDED
    assert set(job.result) == {"repr"} and "'a'" in job.result["repr"]


# --- duplicate deliveries ---------------------------------------------------------------------


def test_a_duplicate_delivery_of_a_finished_job_does_nothing(enqueue):
    job = enqueue("record_call", payment_id=1)
    run_job(str(job.pk))
    finished = reloaded(job)

    assert run_job(str(job.pk)) == {"skipped": "succeeded"}

    again = reloaded(job)
    assert (again.attempts, again.finished_at, again.started_at) == (1, finished.finished_at, finished.started_at)
    assert len(CALLS) == 1


def test_a_duplicate_delivery_while_the_job_runs_does_nothing(enqueue):
    job = enqueue("deliver_own_job_again", marker="dup")

    assert run_job(str(job.pk)) == {"status": "succeeded"}

    job = reloaded(job)
    assert job.result == {"skipped": "running"}  # what the second delivery answered
    assert job.attempts == 1
    assert len(CALLS) == 1


def test_a_delivery_of_a_job_that_does_not_exist_does_nothing(db):
    # e.g. pushed by job_push_rollback_unsafe for a row whose transaction rolled back
    assert run_job(str(uuid.uuid4())) == {"skipped": "missing"}


@pytest.mark.needs_postgres
@pytest.mark.django_db(transaction=True)
def test_two_workers_delivered_the_same_job_at_once_run_it_once(enqueue):
    job = enqueue("sleep_then_record", seconds=0.3, marker="race")

    outcomes = run_at_once(run_job, str(job.pk))

    assert sorted(outcomes, key=str) == [{"skipped": "running"}, {"status": "succeeded"}]
    assert CALLS == [{"marker": "race"}]
    assert reloaded(job).attempts == 1


def test_the_outcome_of_a_run_the_sweeper_took_over_is_dropped(enqueue):
    job = enqueue("taken_over_by_the_sweeper", marker="slow")

    run_job(str(job.pk))

    # Not marked succeeded: the retry the sweeper scheduled runs the (idempotent) body again.
    job = reloaded(job)
    assert job.status == JobStatus.RETRYING
    assert job.result is None


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_advances_while_the_body_runs_and_stops_after(enqueue, settings):
    settings.JOBS_HEARTBEAT_SECONDS = 0.05
    job = enqueue("sleep_then_record", seconds=0.6, marker="beat")

    run_job(str(job.pk))

    job = reloaded(job)
    assert job.status == JobStatus.SUCCEEDED
    assert job.heartbeat_at - job.started_at >= timedelta(seconds=0.3)
    last_beat = job.heartbeat_at
    time.sleep(0.3)  # several heartbeat intervals: none may come after the job ended
    assert reloaded(job).heartbeat_at == last_beat


@pytest.mark.django_db(transaction=True)
def test_one_failed_heartbeat_does_not_silence_the_next_ones(enqueue, settings, monkeypatch):
    import threading

    from django.db import OperationalError
    from django.db.models.query import QuerySet

    settings.JOBS_HEARTBEAT_SECONDS = 0.05
    original_update, failures = QuerySet.update, []

    def flaky_update(self, **kwargs):
        if threading.current_thread().name.startswith("heartbeat") and not failures:
            failures.append(1)
            raise OperationalError("server closed the connection unexpectedly")
        return original_update(self, **kwargs)

    monkeypatch.setattr(QuerySet, "update", flaky_update)
    job = enqueue("sleep_then_record", seconds=0.6, marker="blip")

    run_job(str(job.pk))

    job = reloaded(job)
    assert failures == [1]
    assert job.heartbeat_at - job.started_at >= timedelta(seconds=0.3)


@pytest.mark.needs_postgres
@pytest.mark.django_db(transaction=True)
def test_a_forked_child_runs_its_job_on_its_own_database_session(enqueue):
    """rq's default Worker forks a work-horse per job: the child must not use (or close) the
    database session it inherited from its parent."""
    job = enqueue("database_session")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        parent_session = cursor.fetchone()[0]

    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through its exit code and the row
        try:
            run_job(str(job.pk))
        finally:
            os._exit(0)
    _, status = os.waitpid(child, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    job = reloaded(job)
    assert job.status == JobStatus.SUCCEEDED
    assert job.result["pid"] == child
    assert job.result["backend_pid"] != parent_session
    with connection.cursor() as cursor:  # the parent's session is intact
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] == parent_session


@pytest.mark.needs_postgres
@pytest.mark.django_db(transaction=True)
def test_a_job_after_the_database_dropped_the_workers_connection_runs_on_a_new_one(enqueue):
    # A SimpleWorker keeps its connection between jobs; the database restarted meanwhile.
    job = enqueue("record_call", payment_id=9)
    old_session = database_session_pid()
    end_database_session(old_session)

    assert run_job(str(job.pk)) == {"status": "succeeded"}

    assert reloaded(job).status == JobStatus.SUCCEEDED
    assert database_session_pid() != old_session


# --- requeue and cancel -----------------------------------------------------------------------


def test_requeue_puts_a_failed_job_back_with_a_fresh_budget_audits_and_pushes_on_commit(
    enqueue, operator, settings, django_capture_on_commit_callbacks
):
    job = enqueue("fail_first_run", max_attempts=1, marker="requeue")
    run_job(str(job.pk))
    assert reloaded(job).status == JobStatus.FAILED

    with django_capture_on_commit_callbacks(execute=True):
        job_requeue(job=job, actor=operator, reason="gateway fixed")
        assert django_rq.get_queue("default").count == 0  # not before commit

    job = reloaded(job)
    assert job.status == JobStatus.QUEUED
    assert job.max_attempts == 1 + settings.JOBS_DEFAULT_MAX_ATTEMPTS
    assert django_rq.get_queue("default").job_ids == [str(job.pk)]
    entry = AuditEntry.objects.get(action="job_requeue")
    assert (entry.actor, entry.reason, entry.object_id) == (operator, "gateway fixed", str(job.pk))
    assert run_job(str(job.pk)) == {"status": "succeeded"}
    assert reloaded(job).attempts == 2


def test_cancel_stops_a_queued_job_from_running_and_audits(enqueue, operator, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = enqueue("record_call", payment_id=3)
    assert reloaded(job).status == JobStatus.QUEUED  # its copy is in Redis

    job_cancel(job=job, actor=operator, reason="merchant asked")

    job = reloaded(job)
    assert job.status == JobStatus.CANCELED and job.finished_at is not None
    entry = AuditEntry.objects.get(action="job_cancel")
    assert (entry.actor, entry.reason, entry.object_id) == (operator, "merchant asked", str(job.pk))
    assert run_job(str(job.pk)) == {"skipped": "canceled"}  # the copy in Redis arrives
    assert CALLS == []


@pytest.mark.parametrize(
    "action, status, refusal",
    [
        (job_requeue, status, f"not failed or canceled (it is {status})")
        for status in ("succeeded", "running", "pending", "retrying")
    ]
    + [(job_cancel, status, f"already {status}") for status in ("running", "succeeded", "failed", "canceled")],
)
def test_requeue_and_cancel_refuse_a_job_in_another_state_and_audit_nothing(enqueue, operator, action, status, refusal):
    job = enqueue("record_call")
    Job.objects.filter(pk=job.pk).update(status=status)

    with pytest.raises(ValidationError) as refused:
        action(job=job, actor=operator, reason="by hand")

    assert refused.value.messages == [refusal]
    assert reloaded(job).status == status
    assert not AuditEntry.objects.exists()


def test_a_canceled_job_can_be_requeued_and_then_runs(enqueue, operator):
    job = enqueue("record_call", payment_id=4)
    job_cancel(job=job, actor=operator, reason="hold")

    job_requeue(job=job, actor=operator, reason="release")

    assert run_job(str(job.pk)) == {"status": "succeeded"}
    assert CALLS == [{"payment_id": 4}]
    assert list(AuditEntry.objects.order_by("created_at").values_list("action", flat=True)) == [
        "job_cancel",
        "job_requeue",
    ]
