"""Many Jobs of one function in flight in one worker process (e.g. payments waiting on the
processor), with their database work done in batches.

The entry is still one RQ job per Job (`run_job`), so the outbox, the sweeper and every
guarantee of docs/architecture.md stay as they are. When a worker runs a Job whose function
has a batch handler (JOBS_BATCH_HANDLERS), that run becomes a batch: besides its own Job it
claims other due Jobs of the same function with SKIP LOCKED (each claim as the runner's:
running, one attempt more, started now, this worker), keeps up to the handler's limit of
calls in flight, and records each Job's own outcome, result, error and timings as it
finishes. It claims for at most JOBS_BATCH_MAX_SECONDS, then drains what is in flight, so the
worker's other queues get their turn. The RQ copies of the Jobs it took are removed from
their queue (they would only be skipped), and every claimed Job is in the heartbeat thread's
care until its outcome is written: a worker SIGKILLed mid-batch leaves them `running` with a
stopped heartbeat, and the sweeper retries each, as for one job.

A handler is a class with `max_in_flight` and two methods:
  start(kwargs_list) -> [Call | Done]   the batch's database work before the calls; a Call
                                       holds a concurrent.futures.Future of the call's answer
  finish([(token, answer or exception)]) -> [Done]   the batch's database work after them
Both are expected to isolate a failing item (Done(error=...)) rather than fail the batch, and
to let an error that means PostgreSQL is unreachable through: the batch waits for PostgreSQL
(within the RQ job's timeout, as the runner does) and calls them again with the same items,
so both must be safe to repeat.

PostgreSQL down mid-batch: every database step (claim, start, finish, outcomes) waits for it
and is made again once it answers, so the batch finishes its own payments. Past the RQ job's
timeout the batch gives up: the heartbeats of the Jobs it could not finish stop, and the
sweeper retries each once it is stale (the retry reuses the open attempt's key).
"""

import logging
import time
import traceback as tb
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from datetime import timedelta
from itertools import groupby
from typing import cast

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import F, JSONField, Q
from django.utils import timezone
from django.utils.module_loading import import_string
from redis.exceptions import RedisError

from backoffice.metrics import metrics_record
from backoffice.models import Job, JobStatus
from backoffice.outages import database_unreachable
from backoffice.runner import (
    CLAIMABLE,
    DatabaseUnreachable,
    _deadline,
    _heartbeats,
    _json_safe,
    _patiently,
    _worker_name,
    retry_delay_seconds,
)

logger = logging.getLogger(__name__)


@dataclass
class Call:
    future: Future
    token: object  # what finish() needs to apply the answer


@dataclass
class Done:
    result: object = None
    error: BaseException | None = None


CLAIM_MORE_SQL = """
    UPDATE backoffice_job
       SET status = %s, attempts = attempts + 1, started_at = %s, heartbeat_at = CURRENT_TIMESTAMP,
           finished_at = NULL, worker_name = %s
     WHERE id IN (
           SELECT id FROM backoffice_job
            WHERE status IN (%s, %s, %s) AND run_at <= CURRENT_TIMESTAMP AND func = %s AND queue = %s
            ORDER BY run_at
            LIMIT %s
              FOR UPDATE SKIP LOCKED)
 RETURNING id, kwargs, attempts, max_attempts
"""


def _claim_more(*, func: str, queue: str, limit: int) -> list[Job]:
    fields = {field.name: field for field in Job._meta.concrete_fields}
    params = [
        JobStatus.RUNNING,
        fields["started_at"].get_db_prep_value(timezone.now(), connection),
        _worker_name(),
        *CLAIMABLE,
        func,
        queue,
        limit,
    ]
    with connection.cursor() as cursor:
        cursor.execute(CLAIM_MORE_SQL, params)
        rows = cursor.fetchall()
    return [
        Job(
            pk=pk,
            func=func,
            queue=queue,
            kwargs=cast(JSONField, fields["kwargs"]).from_db_value(kwargs, None, connection),  # type: ignore[arg-type]  # a raw column
            attempts=attempts,
            max_attempts=max_attempts,
        )
        for pk, kwargs, attempts, max_attempts in rows
    ]


def _forget_rq_copies(jobs: list[Job], queue: str) -> None:
    """Take the RQ copies of Jobs we claimed off their queue: a worker popping one would only
    find the Job claimed. One that a worker already popped stays with it (and is skipped)."""
    if not jobs:
        return
    from backoffice.services import rq_queue

    try:
        rq = rq_queue(queue)
        with rq.connection.pipeline(transaction=False) as pipeline:
            for job in jobs:
                pipeline.lrem(rq.key, 1, str(job.pk))
            removed = pipeline.execute()
        gone = [rq.job_class.key_for(str(job.pk)) for job, count in zip(jobs, removed, strict=True) if count]
        if gone:
            rq.connection.delete(*gone)
    except (RedisError, OSError) as error:  # they will be skipped when popped: slower, not wrong
        logger.warning("could not remove %s claimed jobs from RQ: %s", len(jobs), error)


def database_unreachable_error(error: BaseException) -> bool:
    """For handlers: True when the error means PostgreSQL cannot be reached, so the handler
    lets it through to the batch (which waits for PostgreSQL) instead of isolating items."""
    return isinstance(error, DatabaseError) and database_unreachable(error)


class _Batch:
    def __init__(self, leader: Job, handler, deadline: float):
        self.leader = leader
        self.handler = handler
        self.deadline = deadline  # the RQ job's timeout, less a margin (runner._deadline)
        self.in_flight: dict[Future, tuple[Job, object]] = {}
        self.beats: dict = {}
        self.started: dict = {}  # job id -> monotonic time its run began (job_duration_seconds)
        self.finished = 0
        self.leader_status = JobStatus.RUNNING.value

    def _db(self, call, doing: str):
        """call() once PostgreSQL answers (runner._patiently): every database step of a batch
        is safe to repeat."""
        return _patiently(call, doing, self.deadline)

    def run(self) -> dict:
        try:
            return self._run()
        except DatabaseUnreachable:
            logger.warning(
                "batch led by job %s interrupted: PostgreSQL unreachable; the sweeper retries its %s unfinished jobs",
                self.leader.pk,
                len(self.beats),
            )
            return {"interrupted": "database unreachable"}
        finally:
            # Jobs whose outcome was not written: their heartbeat stops, so the sweeper sees
            # them stale and retries each (never a live-looking Job nobody will finish).
            for beating in self.beats.values():
                beating.__exit__(None, None, None)
            self.beats.clear()

    def _run(self) -> dict:
        limit = max(1, self.handler.max_in_flight)
        deadline = min(time.monotonic() + settings.JOBS_BATCH_MAX_SECONDS, self.deadline)
        tick = settings.JOBS_BATCH_TICK_SECONDS
        new = [self.leader]
        while True:
            if new:
                self._start(new)
            room = limit - len(self.in_flight)
            new = []
            if room > 0 and time.monotonic() < deadline:
                new = self._db(
                    lambda room=room: _claim_more(func=self.leader.func, queue=self.leader.queue, limit=room),
                    "claiming jobs for a batch",
                )
                _forget_rq_copies(new, self.leader.queue)
            if new:
                continue
            if not self.in_flight:
                break
            # Let answers gather for a tick, so each batch of database work carries many;
            # with no room to claim, the first answer is enough to make room.
            done, _ = wait(self.in_flight, timeout=tick, return_when=FIRST_COMPLETED)
            if done and room > 0:
                more, _ = wait(self.in_flight, timeout=tick / 2)
                done |= more
            if done:
                self._finish(done)
        logger.info("batch led by job %s: %s jobs", self.leader.pk, self.finished)
        # What run_job returns for the RQ job: the leader Job's own outcome, as for one job.
        return {"status": self.leader_status}

    def _start(self, jobs: list[Job]) -> None:
        now = time.monotonic()
        for job in jobs:
            beating = _heartbeats.beating(job.pk, job.attempts)
            beating.__enter__()
            self.beats[job.pk] = beating
            self.started[job.pk] = now
        kwargs_list = [job.kwargs for job in jobs]
        try:
            started = self._db(lambda: self.handler.start(kwargs_list), f"starting a batch of {len(jobs)} jobs")
        except DatabaseUnreachable:
            raise
        except Exception as error:  # the handler could not even isolate the failure
            logger.exception("batch start of %s jobs failed", len(jobs))
            started = [Done(error=error)] * len(jobs)
        immediate = []
        for job, item in zip(jobs, started, strict=True):
            if isinstance(item, Call):
                self.in_flight[item.future] = (job, item.token)
            else:
                immediate.append((job, item))
        self._record(immediate)

    def _finish(self, done: set[Future]) -> None:
        answered = []
        for future in done:
            job, token = self.in_flight.pop(future)
            try:
                answer = future.result()
            except Exception as error:
                answer = error
            answered.append((job, token, answer))
        answers = [(token, answer) for _, token, answer in answered]
        try:
            outcomes = self._db(lambda: self.handler.finish(answers), f"finishing {len(answers)} jobs of a batch")
        except DatabaseUnreachable:
            raise
        except Exception as error:
            logger.exception("batch finish of %s jobs failed", len(answered))
            outcomes = [Done(error=error)] * len(answered)
        self._record([(job, outcome) for (job, _, _), outcome in zip(answered, outcomes, strict=True)])

    def _record(self, outcomes: list[tuple[Job, Done]]) -> None:
        """Each Job's outcome, as the runner writes it: only if the row is still this run's."""
        if not outcomes:
            return
        finished = timezone.now()
        succeeded = sorted(
            ((job, _json_safe(done.result)) for job, done in outcomes if done.error is None), key=lambda o: repr(o[1])
        )
        for _, same_result in groupby(succeeded, key=lambda o: repr(o[1])):
            group = list(same_result)
            mine = Q()
            for job, _ in group:
                mine |= Q(pk=job.pk, attempts=job.attempts)
            written = self._db(
                lambda mine=mine, result=group[0][1]: Job.objects.filter(mine, status=JobStatus.RUNNING).update(
                    status=JobStatus.SUCCEEDED, finished_at=finished, result=result, last_error="", traceback=""
                ),
                f"recording the outcomes of {len(group)} jobs",
            )
            if any(job.pk == self.leader.pk for job, _ in group):
                self.leader_status = JobStatus.SUCCEEDED.value
            if written != len(group):
                logger.warning("%s job outcomes dropped: taken over while running", len(group) - written)
        statuses = {job.pk: JobStatus.SUCCEEDED.value for job, done in outcomes if done.error is None}
        for job, done in outcomes:
            if done.error is not None:
                statuses[job.pk] = self._record_failure(job, done.error, finished)
                if job.pk == self.leader.pk:
                    self.leader_status = statuses[job.pk]
        for job, _ in outcomes:
            beating = self.beats.pop(job.pk, None)
            if beating is not None:
                beating.__exit__(None, None, None)
        self.finished += len(outcomes)
        self._record_metrics(outcomes, statuses)

    def _record_metrics(self, outcomes: list[tuple[Job, Done]], statuses: dict) -> None:
        """jobs_finished and job_duration_seconds per Job, as the runner records one job's."""
        now = time.monotonic()
        counters, observations = [], []
        for job, _ in outcomes:
            labels = {"queue": job.queue, "func": job.short_func}
            counters.append(("jobs_finished", {**labels, "outcome": statuses[job.pk]}))
            observations.append(("job_duration_seconds", labels, now - self.started.pop(job.pk, now)))
        metrics_record(counters=counters, observations=observations)

    def _record_failure(self, job: Job, error: BaseException, finished) -> str:
        fields = {
            "finished_at": finished,
            "last_error": f"{type(error).__name__}: {error}"[:2000],
            "traceback": "".join(tb.format_exception(error))[-8000:],
        }
        if database_unreachable_error(error):
            # The database blinked (a call that wrote through it), the job did not fail: again
            # at once, without spending an attempt, as the runner does.
            fields.update(status=JobStatus.RETRYING, run_at=finished, attempts=F("attempts") - 1)
        elif job.attempts < job.max_attempts:
            fields.update(
                status=JobStatus.RETRYING,
                run_at=finished + timedelta(seconds=retry_delay_seconds(job.attempts)),
            )
        else:
            fields.update(status=JobStatus.FAILED)
        mine = Job.objects.filter(pk=job.pk, status=JobStatus.RUNNING, attempts=job.attempts)
        if not self._db(lambda: mine.update(**fields), f"recording the outcome of job {job.pk}"):
            logger.warning("job %s outcome dropped: it was taken over while running", job.pk)
        logger.warning("job %s attempt %s failed: %s", job.pk, job.attempts, fields["last_error"])
        return fields["status"].value


def run_batch(leader: Job, deadline: float | None = None) -> dict:
    """Run the claimed leader Job (its queue loaded by the claim) and, beside it, other due
    Jobs of its function (see above), until `deadline` (monotonic; the RQ job's timeout)."""
    handler = import_string(settings.JOBS_BATCH_HANDLERS[leader.func])()
    return _Batch(leader, handler, deadline if deadline is not None else _deadline()).run()
