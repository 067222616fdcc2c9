"""The one runner: what RQ executes for every backoffice.Job."""

import json
import logging
import os
import socket
import threading
import time
import traceback as tb
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, cast

import structlog
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError, InterfaceError, OperationalError, connection, connections
from django.db.models import F, JSONField
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.module_loading import import_string
from rq import get_current_job

from backoffice.backoff import backoff_delay_seconds
from backoffice.metrics import metrics_record
from backoffice.models import Job, JobStatus
from backoffice.outages import Outage, database_unreachable
from backoffice.progress import running_job

logger = logging.getLogger(__name__)

CLAIMABLE = (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RETRYING)

# Database connections a forked child inherited from its parent: closing one, or letting it be
# garbage-collected, sends Terminate on the parent's socket and ends the parent's session. The
# child keeps them referenced until it exits and opens its own.
_inherited_db_connections: list = []


def _forget_inherited_db_connections() -> None:
    for db in connections.all(initialized_only=True):
        if db.connection is not None:
            _inherited_db_connections.append(db.connection)
            db.connection = None


# rq's default Worker forks a work-horse per job; `manage.py rqworker` closes its connections
# before it starts, but a process that imported the runner and used the database before
# forking (a benchmark, a custom worker) would otherwise share its connection with the child.
os.register_at_fork(after_in_child=_forget_inherited_db_connections)


def _worker_name() -> str:
    # Computed per run: a forked work-horse has its own pid.
    return f"{socket.gethostname()}:{os.getpid()}"


def close_broken_or_expired_db_connections() -> None:
    """What Django does between requests, for a long-lived worker (SimpleWorker) that runs job
    after job: drop a connection that broke (the database restarted) or expired, so the job
    gets a working one. A connection inside a caller's transaction (a test, a shell) is left alone."""
    for db in connections.all(initialized_only=True):
        if not db.in_atomic_block:
            db.close_if_unusable_or_obsolete()


def _json_safe(result):
    """The job's return value as stored on the row: JSON, or its repr when JSON cannot carry it
    (a result must never turn a finished job into a failed one)."""
    try:
        return json.loads(json.dumps(result, cls=DjangoJSONEncoder))
    except (TypeError, ValueError):
        return {"repr": repr(result)[:2000]}


def retry_delay_seconds(attempts: int) -> float:
    """Back-off before the next attempt; past the schedule's end, its last wait again."""
    return backoff_delay_seconds(settings.JOBS_RETRY_BACKOFF_SECONDS, attempts, repeat_last=True) or 0.0


class _Heartbeats:
    """One thread per worker process stamps heartbeat_at of the jobs this process is running,
    so the sweeper can tell a live job from one whose worker was killed. A job shorter than
    one beat never touches the database here; the thread holds a connection only while a
    long job runs. (One thread per process, not per job: no thread start and join per job.)"""

    def __init__(self):
        self._reset()

    def _reset(self) -> None:
        self.outage = Outage("PostgreSQL")  # logged once per outage, not once per beat
        self.lock = threading.Lock()
        self.running: dict = {}  # job id -> (attempt, monotonic time of its last beat)
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None

    @contextmanager
    def beating(self, job_id, attempt: int):
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._loop, daemon=True, name="heartbeat")
                self.thread.start()
            self.running[job_id] = (attempt, time.monotonic())
        self.wake.set()  # the interval may have changed since the thread last slept
        try:
            yield
        finally:
            with self.lock:
                self.running.pop(job_id, None)

    def _loop(self) -> None:
        while True:
            interval = settings.JOBS_HEARTBEAT_SECONDS
            self.wake.wait(timeout=min(interval, 1.0))
            self.wake.clear()
            now = time.monotonic()
            with self.lock:
                due = [(job_id, attempt) for job_id, (attempt, last) in self.running.items() if now - last >= interval]
                for job_id, attempt in due:
                    self.running[job_id] = (attempt, now)
                idle = not self.running
            for job_id, attempt in due:
                try:
                    # The database's clock, like the sweeper's staleness check: workers and the
                    # sweeper may run on machines whose clocks disagree.
                    Job.objects.filter(pk=job_id, status=JobStatus.RUNNING, attempts=attempt).update(heartbeat_at=Now())
                except DatabaseError as error:  # a missed beat (a database blip) must not silence the rest
                    self.outage.failed(error, f"stamping the heartbeat of job {job_id}")
                    connection.close()
                except Exception:
                    logger.exception("heartbeat of job %s failed; trying again next beat", job_id)
                    connection.close()
                else:
                    self.outage.ended()
            if idle:
                connection.close()


_heartbeats = _Heartbeats()
# A forked work-horse has none of its parent's threads, and a lock its parent held would stay
# held: it starts its own heartbeat state.
os.register_at_fork(after_in_child=_heartbeats._reset)


# Claim and load in one statement (Django's update() cannot return rows): a payment job's
# ledger cost is mostly round trips, and this saves one on every job.
CLAIM_SQL = """
    UPDATE backoffice_job
       SET status = %s, attempts = attempts + 1, started_at = %s, heartbeat_at = CURRENT_TIMESTAMP,
           finished_at = NULL, worker_name = %s
     WHERE id = %s AND status IN (%s, %s, %s)
 RETURNING func, kwargs, attempts, max_attempts, queue
"""


def _claim(job_id: str) -> Job | None:
    """Take the Job if it is claimable: running, one more attempt, our worker's name; and
    return what the run needs. None if another worker has it or it is done."""
    fields = {field.name: field for field in Job._meta.concrete_fields}
    pk = fields["id"].to_python(job_id)
    params = [
        JobStatus.RUNNING,
        fields["started_at"].get_db_prep_value(timezone.now(), connection),
        _worker_name(),
        fields["id"].get_db_prep_value(pk, connection),
        *CLAIMABLE,
    ]
    with connection.cursor() as cursor:
        cursor.execute(CLAIM_SQL, params)
        row = cursor.fetchone()
    if row is None:
        return None
    func, kwargs, attempts, max_attempts, queue = row
    kwargs = cast(JSONField, fields["kwargs"]).from_db_value(kwargs, None, connection)  # type: ignore[arg-type]  # a raw column
    return Job(pk=pk, func=func, kwargs=kwargs, attempts=attempts, max_attempts=max_attempts, queue=queue)


def _record_metrics(job: Job, outcome: str, seconds: float) -> None:
    labels = {"queue": job.queue, "func": job.short_func}
    metrics_record(
        counters=[("jobs_finished", {**labels, "outcome": outcome})],
        observations=[("job_duration_seconds", labels, seconds)],
    )


# One per worker process: a PostgreSQL outage is logged once, not once per job.
_database_outage = Outage("PostgreSQL")


class DatabaseUnreachable(Exception):
    pass


def _wait_for_database(error: BaseException, doing: str, deadline: float) -> None:
    """Back off until PostgreSQL answers again; DatabaseUnreachable at the deadline. Raises the
    error itself at once when PostgreSQL answers (it was something else)."""
    if not database_unreachable(error):
        raise error
    while True:
        wait = _database_outage.failed(error, doing)
        if time.monotonic() + wait >= deadline:
            raise DatabaseUnreachable(str(error))
        time.sleep(wait)
        try:
            connection.close()
            connection.ensure_connection()
        except DatabaseError as again:
            error = again
            continue
        _database_outage.ended()
        return


def _patiently(call, doing: str, deadline: float):
    """call() once PostgreSQL answers: what a worker does during an outage is wait for it.
    A connection that broke while PostgreSQL restarted is replaced and the call made again
    once (every call here is a conditional update, safe to repeat)."""
    retried_on_a_new_connection = False
    while True:
        try:
            return call()
        except (InterfaceError, OperationalError) as error:
            if not database_unreachable(error):  # it answers again: the connection was stale
                if retried_on_a_new_connection:
                    raise
                retried_on_a_new_connection = True
                continue
            _wait_for_database(error, doing, deadline)


def _deadline() -> float:
    # Leave RQ's job timeout unspent: a job RQ times out lands in its failed registry.
    current = get_current_job()
    timeout = current.timeout if current is not None and current.timeout and current.timeout > 0 else 60
    return time.monotonic() + max(1.0, timeout - 10)


def run_job(job_id: str) -> dict:
    """Claim the Job, run its function, record the outcome. A second delivery of the same
    Job (requeued by hand, pushed twice) finds it claimed or finished and does nothing.

    PostgreSQL unreachable does not fail the RQ job (no noise in RQ's failed registry): the
    runner waits for it within the RQ job's timeout. Unclaimed by then, the row stays `queued`
    and the sweeper re-pushes it; claimed, it stays `running` and the sweeper retries it once
    its heartbeat is stale. A body that failed because PostgreSQL went away is retried at
    once, without spending an attempt."""
    deadline = _deadline()
    # A SimpleWorker runs job after job in one thread: what a job binds to its log lines
    # (job_id, payment...) must not stay on the next job's, nor on the sweeper's.
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(job_id=str(job_id))
    try:
        return _run_job(job_id, deadline)
    finally:
        structlog.contextvars.clear_contextvars()


def _run_job(job_id: str, deadline: float) -> dict:
    close_broken_or_expired_db_connections()
    try:
        job = _patiently(lambda: _claim(job_id), f"claiming job {job_id}", deadline)
    except DatabaseUnreachable:
        logger.warning("job %s not run: PostgreSQL unreachable; the sweeper pushes it again", job_id)
        return {"skipped": "database unreachable"}
    if job is None:
        status = Job.objects.filter(pk=job_id).values_list("status", flat=True).first()
        logger.info("job %s not run: it is %s", job_id, status or "missing")
        return {"skipped": status or "missing"}

    if settings.JOBS_BATCH_ENABLED and job.func in settings.JOBS_BATCH_HANDLERS:
        from backoffice.batch import run_batch  # it builds on this module

        return run_batch(job, deadline)
    mine = Job.objects.filter(pk=job.pk, status=JobStatus.RUNNING, attempts=job.attempts)
    structlog.contextvars.bind_contextvars(job=job.short_func, attempt=job.attempts)
    started = time.monotonic()
    try:
        with _heartbeats.beating(job.pk, job.attempts), running_job(job.pk):
            result = import_string(job.func)(**job.kwargs)
    except Exception as error:
        finished = timezone.now()
        fields: dict[str, Any] = {
            "finished_at": finished,
            "last_error": f"{type(error).__name__}: {error}"[:2000],
            "traceback": tb.format_exc()[-8000:],
        }
        if isinstance(error, DatabaseError) and database_unreachable(error):
            # The database blinked, the job did not fail: again as soon as it answers.
            fields.update(status=JobStatus.RETRYING, run_at=finished, attempts=F("attempts") - 1)
        elif job.attempts < job.max_attempts:
            fields.update(
                status=JobStatus.RETRYING,
                run_at=finished + timedelta(seconds=retry_delay_seconds(job.attempts)),
            )
        else:
            fields.update(status=JobStatus.FAILED)
        outcome = _record(job, mine, fields, deadline)
        logger.warning("job %s attempt %s failed: %s", job.pk, job.attempts, fields["last_error"])
        _record_metrics(job, fields["status"].value, time.monotonic() - started)
        return outcome or {"status": fields["status"].value}
    fields = {
        "status": JobStatus.SUCCEEDED,
        "finished_at": timezone.now(),
        "result": _json_safe(result),
        "last_error": "",
        "traceback": "",
    }
    outcome = _record(job, mine, fields, deadline)
    _record_metrics(job, JobStatus.SUCCEEDED.value, time.monotonic() - started)
    return outcome or {"status": JobStatus.SUCCEEDED.value}


def _record(job: Job, mine, fields: dict, deadline: float) -> dict | None:
    """Write the outcome if the row is still this run's; an answer for RQ if it could not be."""
    try:
        written = _patiently(lambda: mine.update(**fields), f"recording the outcome of job {job.pk}", deadline)
    except DatabaseUnreachable:
        logger.warning("job %s: outcome not recorded (PostgreSQL unreachable); the sweeper retries it", job.pk)
        return {"interrupted": "database unreachable"}
    if not written:
        logger.warning("job %s outcome dropped: it was taken over while running", job.pk)
    return None
