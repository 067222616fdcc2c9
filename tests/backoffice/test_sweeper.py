"""The sweeper: pushes what Redis never got, re-pushes what Redis lost, recovers the jobs of
dead workers, and never pushes a job twice when two sweepers run at once."""

import io
from collections import Counter
from datetime import timedelta

import django_rq
import pytest
from django.core.management import call_command
from django.utils import timezone
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus

from backoffice import sweeper
from backoffice.models import Job, JobStatus
from backoffice.services import QUEUES, job_push_after_commit
from backoffice.sweeper import PeriodicSweeper, jobs_sweep
from tests.helpers import database_session_pid, end_database_session, run_at_once

FUNC = "tests.backoffice.test_runner.record_call"


def make_job(status=JobStatus.PENDING, *, age_seconds: float = 60, queue="default", **fields) -> Job:
    """A row as a crash or an outage left it: created (and due) age_seconds ago."""
    then = timezone.now() - timedelta(seconds=age_seconds)
    fields.setdefault("run_at", then)
    job = Job.objects.create(func=FUNC, kwargs={}, queue=queue, status=status, **fields)
    Job.objects.filter(pk=job.pk).update(created_at=then)
    return job


def in_redis(queue="default") -> list[str]:
    return django_rq.get_queue(queue).job_ids


def status_of(job: Job) -> str:
    job.refresh_from_db()
    return job.status


pytestmark = pytest.mark.django_db


def test_pushes_due_pending_and_retrying_jobs_and_nothing_else(settings):
    settings.JOBS_PENDING_GRACE_SECONDS = 5
    left_pending = make_job(JobStatus.PENDING, queue="payments")
    due_retry = make_job(JobStatus.RETRYING, attempts=1)
    later_retry = make_job(JobStatus.RETRYING, attempts=1, run_at=timezone.now() + timedelta(minutes=5))
    just_created = make_job(JobStatus.PENDING, age_seconds=1)  # its on-commit push may still come
    scheduled = make_job(JobStatus.PENDING, run_at=timezone.now() + timedelta(minutes=5))
    settled = [make_job(status) for status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)]

    report = jobs_sweep()

    assert (report.pushed, report.repushed, report.recovered, report.failed) == (2, 0, 0, 0)
    assert in_redis("payments") == [str(left_pending.pk)]
    assert in_redis("default") == [str(due_retry.pk)]
    for job in (left_pending, due_retry):
        job.refresh_from_db()
        assert job.status == JobStatus.QUEUED and job.queued_at is not None
    assert [status_of(job) for job in (later_retry, just_created, scheduled)] == [
        JobStatus.RETRYING,
        JobStatus.PENDING,
        JobStatus.PENDING,
    ]
    assert [status_of(job) for job in settled] == [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED]
    assert (
        str(jobs_sweep()) == "0 pushed, 0 re-pushed (lost from Redis), 0 recovered from dead workers, 0 failed for good"
    )


def test_a_pushed_job_is_the_runner_with_the_job_id():
    job = make_job(JobStatus.PENDING, queue="payments")

    jobs_sweep()

    rq_job = django_rq.get_queue("payments").fetch_job(str(job.pk))
    assert rq_job.func_name == "backoffice.runner.run_job"
    assert rq_job.args == (str(job.pk),)


def test_repushes_queued_jobs_that_redis_lost():
    lost = [make_job(JobStatus.PENDING), make_job(JobStatus.PENDING, queue="payments")]
    jobs_sweep()
    django_rq.get_connection("default").flushdb()  # a Redis restart without persistence
    still_there = make_job(JobStatus.PENDING)
    job_push_after_commit(job_id=still_there.pk, queue="default")
    assert in_redis("default") == [str(still_there.pk)]

    report = jobs_sweep()

    assert report.repushed == 2
    assert sorted(in_redis("default")) == sorted([str(lost[0].pk), str(still_there.pk)])
    assert in_redis("payments") == [str(lost[1].pk)]
    assert jobs_sweep().repushed == 0


def test_repushes_a_queued_job_that_rq_failed_before_our_runner_claimed_it():
    job = make_job(JobStatus.PENDING)
    jobs_sweep()
    # e.g. rq's monitor found its work-horse dead and moved the job to the failed registry
    django_rq.get_queue("default").remove(str(job.pk))
    RQJob.fetch(str(job.pk), connection=django_rq.get_connection("default")).set_status(RQStatus.FAILED)

    assert jobs_sweep().repushed == 1

    assert in_redis("default") == [str(job.pk)]


def test_repushes_a_job_rq_started_long_ago_that_our_runner_never_claimed(settings):
    settings.JOBS_STALE_AFTER_SECONDS = 30
    recent, old = make_job(JobStatus.PENDING), make_job(JobStatus.PENDING)
    jobs_sweep()
    Job.objects.filter(pk=old.pk).update(queued_at=timezone.now() - timedelta(minutes=5))
    queue = django_rq.get_queue("default")
    for job in (recent, old):  # a worker took both from the queue and died before claiming
        queue.remove(str(job.pk))
        RQJob.fetch(str(job.pk), connection=queue.connection).set_status(RQStatus.STARTED)

    assert jobs_sweep().repushed == 1

    assert in_redis("default") == [str(old.pk)]


def test_leaves_queued_jobs_alone_while_redis_has_them_or_within_the_grace(settings):
    settings.JOBS_QUEUED_GRACE_SECONDS = 30
    waiting = make_job(JobStatus.PENDING)
    jobs_sweep()
    Job.objects.filter(pk=waiting.pk).update(queued_at=timezone.now() - timedelta(minutes=10))  # a long backlog
    just_queued = make_job(JobStatus.QUEUED, queued_at=timezone.now())  # its push may be in flight

    assert jobs_sweep().repushed == 0

    assert in_redis("default") == [str(waiting.pk)]
    assert status_of(just_queued) == JobStatus.QUEUED


def test_recovers_running_jobs_whose_worker_stopped_beating(settings):
    settings.JOBS_STALE_AFTER_SECONDS = 30
    long_ago = timezone.now() - timedelta(minutes=5)
    dead = make_job(JobStatus.RUNNING, attempts=1, heartbeat_at=long_ago, worker_name="web-3:4242")
    out_of_attempts = make_job(JobStatus.RUNNING, attempts=3, max_attempts=3, heartbeat_at=long_ago)
    alive = make_job(JobStatus.RUNNING, attempts=1, heartbeat_at=timezone.now())

    report = jobs_sweep()

    assert (report.recovered, report.failed, report.pushed) == (1, 1, 1)
    dead.refresh_from_db()
    assert dead.status == JobStatus.QUEUED  # retried at once: back on the queue in the same pass
    assert in_redis("default") == [str(dead.pk)]
    assert dead.attempts == 1  # the runner counts the next attempt when it claims it
    assert dead.last_error.startswith("Worker web-3:4242 stopped (no heartbeat since ")
    out_of_attempts.refresh_from_db()
    assert out_of_attempts.status == JobStatus.FAILED and "stopped" in out_of_attempts.last_error
    assert status_of(alive) == JobStatus.RUNNING


def test_with_redis_unreachable_rows_stay_as_they_were(settings):
    settings.RQ_QUEUES = {name: {"URL": "redis://127.0.0.1:9/0"} for name in QUEUES}  # nothing listens there
    pending = make_job(JobStatus.PENDING)
    earlier = timezone.now() - timedelta(hours=1)
    retrying = make_job(JobStatus.RETRYING, attempts=1, queued_at=earlier)

    report = jobs_sweep()

    assert report.redis_down and report.pushed == 0
    assert "Redis unavailable" in str(report)
    pending.refresh_from_db()
    retrying.refresh_from_db()
    assert (pending.status, pending.queued_at) == (JobStatus.PENDING, None)
    assert (retrying.status, retrying.queued_at) == (JobStatus.RETRYING, earlier)


def test_sweep_jobs_command_prints_its_report():
    make_job(JobStatus.PENDING)
    out = io.StringIO()

    call_command("sweep_jobs", stdout=out)

    assert out.getvalue().strip() == (
        "1 pushed, 0 re-pushed (lost from Redis), 0 recovered from dead workers, 0 failed for good"
    )


@pytest.mark.needs_postgres
@pytest.mark.django_db(transaction=True)
def test_the_periodic_sweeper_survives_a_database_restart_between_passes(caplog):
    # The periodic process keeps its connection from pass to pass.
    make_job(JobStatus.PENDING)
    old_session = database_session_pid()
    end_database_session(old_session)

    PeriodicSweeper().run_once()

    assert "sweep: 1 pushed" in caplog.text
    assert database_session_pid() != old_session


def test_the_periodic_sweeper_logs_a_redis_outage_once_and_its_end_once(settings, caplog):
    healthy = settings.RQ_QUEUES
    settings.RQ_QUEUES = {name: {"URL": "redis://127.0.0.1:9/0"} for name in QUEUES}  # nothing listens there
    make_job(JobStatus.PENDING)
    periodic = PeriodicSweeper()

    waits = [periodic.run_once() for _ in range(3)]
    settings.RQ_QUEUES = healthy
    periodic.run_once()

    assert all(0 < wait <= settings.JOBS_SWEEP_INTERVAL_SECONDS for wait in waits)
    outage_lines = [r.getMessage() for r in caplog.records if r.name == "backoffice.outages"]
    assert len(outage_lines) == 2, outage_lines
    assert outage_lines[0].startswith("Redis unreachable while sweeping")
    assert outage_lines[1].startswith("Redis reachable again after")
    assert "sweep: 1 pushed" in caplog.text


@pytest.mark.needs_postgres
@pytest.mark.django_db(transaction=True)
def test_sweepers_running_at_the_same_time_never_push_the_same_job_twice(settings, monkeypatch):
    # The production grace: a queued row younger than this may still be on its way to Redis.
    settings.JOBS_QUEUED_GRACE_SECONDS = 30
    settings.JOBS_STALE_AFTER_SECONDS = 30
    monkeypatch.setattr(sweeper, "BATCH", 20)  # many small batches, so the sweepers interleave
    long_ago = timezone.now() - timedelta(hours=1)
    Job.objects.bulk_create(
        [Job(func=FUNC, queue=QUEUES[n % 3], status=JobStatus.PENDING, run_at=long_ago) for n in range(300)]
        + [
            Job(func=FUNC, status=JobStatus.RUNNING, attempts=1, run_at=long_ago, heartbeat_at=long_ago)
            for _ in range(100)
        ]
        + [Job(func=FUNC, status=JobStatus.QUEUED, run_at=long_ago, queued_at=long_ago) for _ in range(100)]
    )
    Job.objects.update(created_at=long_ago)
    reports = run_at_once(jobs_sweep, copies=3)

    assert sum(report.pushed for report in reports) == 400  # 300 left pending + 100 recovered
    assert sum(report.repushed for report in reports) == 100
    assert sum(report.recovered for report in reports) == 100
    pushes = Counter(job_id for queue in QUEUES for job_id in in_redis(queue))
    assert len(pushes) == 500
    assert set(pushes.values()) == {1}
    assert set(Job.objects.values_list("status", flat=True)) == {JobStatus.QUEUED}


def test_repushes_a_job_a_worker_took_from_its_queue_and_died_before_starting():
    taken, waiting = make_job(JobStatus.PENDING, queue="payments"), make_job(JobStatus.PENDING, queue="payments")
    jobs_sweep()
    queue = django_rq.get_queue("payments")
    # A one-queue worker moves the id it takes to RQ's intermediate list (BLMOVE) and died there:
    # RQ still calls the job queued.
    queue.connection.lmove(queue.key, queue.intermediate_queue_key)
    assert RQJob.fetch(str(taken.pk), connection=queue.connection).get_status() == RQStatus.QUEUED

    report = jobs_sweep()

    assert report.repushed == 1
    assert in_redis("payments") == [str(waiting.pk), str(taken.pk)]
    assert queue.connection.lrange(queue.intermediate_queue_key, 0, -1) == []
    assert jobs_sweep().repushed == 0


def test_repushes_a_queued_job_whose_run_ended_without_claiming_it():
    # e.g. the runner could not reach the database and returned without running it
    job = make_job(JobStatus.PENDING)
    jobs_sweep()
    django_rq.get_queue("default").remove(str(job.pk))
    RQJob.fetch(str(job.pk), connection=django_rq.get_connection("default")).set_status(RQStatus.FINISHED)

    assert jobs_sweep().repushed == 1

    assert in_redis("default") == [str(job.pk)]


def test_a_long_backlog_is_not_mistaken_for_lost_jobs(settings):
    settings.JOBS_QUEUED_GRACE_SECONDS = 30
    backlog = [make_job(JobStatus.PENDING) for _ in range(30)]
    jobs_sweep()
    Job.objects.update(queued_at=timezone.now() - timedelta(minutes=10))
    queue = django_rq.get_queue("default")
    queue.connection.lpop(queue.key)  # a worker took the first one and died; the rest wait

    assert jobs_sweep().repushed == 1

    assert in_redis("default") == [str(job.pk) for job in backlog[1:]] + [str(backlog[0].pk)]
