"""The sweeper: finishes what a crash, a Redis outage or a flushed Redis left behind.

One pass (`jobs_sweep`) is safe to run from several processes at once, and no row lock is
held while Redis is called:
- due `pending`/`retrying` rows are taken with SKIP LOCKED and marked `queued` in one short
  transaction, then pushed; a push that fails puts its row back;
- a `queued` row is taken as lost from Redis only once it is older than
  JOBS_QUEUED_GRACE_SECONDS (which must exceed the few milliseconds a pass spends pushing
  what it took), and is re-pushed by whichever sweeper moves its `queued_at` first. Lost
  means: RQ has no such job, or calls it failed/stopped/canceled/finished, or started long
  ago, or still queued while its id is in no queue list (a worker took it and died before
  starting it);
- the runner's claim makes a job that is delivered twice anyway run once.
"""

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from itertools import groupby
from typing import cast

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone
from redis.exceptions import RedisError
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus

from backoffice.health import sweep_recorded
from backoffice.models import Job, JobStatus
from backoffice.outages import REDIS_UNREACHABLE, Outage, database_unreachable
from backoffice.periodic import registered_periodic
from backoffice.runner import close_broken_or_expired_db_connections
from backoffice.services import job_push_rollback_unsafe, rq_queue

logger = logging.getLogger(__name__)

BATCH = 500
# What RQ says about a job that will never run from where it is now.
RQ_GONE = {RQStatus.FAILED.value, RQStatus.STOPPED.value, RQStatus.CANCELED.value, RQStatus.FINISHED.value}


@dataclass
class SweepReport:
    pushed: int = 0
    repushed: int = 0
    recovered: int = 0
    failed: int = 0
    redis_down: bool = False

    def __str__(self) -> str:
        text = (
            f"{self.pushed} pushed, {self.repushed} re-pushed (lost from Redis), "
            f"{self.recovered} recovered from dead workers, {self.failed} failed for good"
        )
        return text + (" (Redis unavailable: will try again)" if self.redis_down else "")


def jobs_sweep() -> SweepReport:
    """One pass: retry (or fail) running jobs whose worker stopped beating, push due
    pending/retrying jobs, and re-push queued jobs Redis lost."""
    report = SweepReport()
    _recover_dead_running(report)
    _push_due(report)
    _repush_lost_queued(report)
    return report


def _recover_dead_running(report: SweepReport) -> None:
    # Staleness is judged on the database's clock, which also stamps the heartbeats: the
    # sweeper and the workers may run on machines whose clocks disagree.
    stale_after = timedelta(seconds=settings.JOBS_STALE_AFTER_SECONDS)
    while True:
        now = timezone.now()
        with transaction.atomic():
            dead = list(
                Job.objects.select_for_update(skip_locked=True).filter(
                    status=JobStatus.RUNNING, heartbeat_at__lt=Now() - stale_after
                )[:BATCH]
            )
            for job in dead:
                job.last_error = (
                    f"Worker {job.worker_name or '?'} stopped "
                    f"(no heartbeat since {job.heartbeat_at:%Y-%m-%d %H:%M:%S%z})"
                )
                job.finished_at = now
                if job.attempts < job.max_attempts:
                    job.status, job.run_at = JobStatus.RETRYING, now
                    report.recovered += 1
                else:
                    job.status = JobStatus.FAILED
                    report.failed += 1
                job.save(update_fields=["status", "run_at", "last_error", "finished_at"])
                logger.warning("job %s: %s -> %s", job.pk, job.last_error, job.status)
        if len(dead) < BATCH:
            return


def _push_due(report: SweepReport) -> None:
    # A batch at a time until none is left: after a long Redis outage the backlog is large.
    while not report.redis_down:
        now = timezone.now()
        taken = _take_due(now)
        for pk, queue, previous_status, previous_queued_at in taken:
            if not report.redis_down and job_push_rollback_unsafe(job_id=pk, queue=queue):
                report.pushed += 1
                continue
            report.redis_down = True
            Job.objects.filter(pk=pk, status=JobStatus.QUEUED, queued_at=now).update(
                status=previous_status, queued_at=previous_queued_at
            )
        if len(taken) < BATCH:
            return


def _take_due(now) -> list[tuple]:
    """Mark a batch of due pending/retrying rows queued, in one short transaction, and return
    them to push: the lock ends here, not after a network call. If this process dies before
    pushing, they are queued jobs Redis does not have, which _repush_lost_queued finds."""
    # A brand-new pending row is normally pushed by its own on-commit hook; the grace
    # keeps the sweeper from racing that push (a race would be harmless, only wasteful).
    pending_before = now - timedelta(seconds=settings.JOBS_PENDING_GRACE_SECONDS)
    with transaction.atomic():
        taken = list(
            Job.objects.select_for_update(skip_locked=True)
            .filter(status__in=(JobStatus.PENDING, JobStatus.RETRYING), run_at__lte=now)
            .exclude(status=JobStatus.PENDING, created_at__gt=pending_before)
            .order_by("run_at")
            .values_list("pk", "queue", "status", "queued_at")[:BATCH]
        )
        Job.objects.filter(pk__in=[row[0] for row in taken]).update(status=JobStatus.QUEUED, queued_at=now)
    return taken


def _repush_lost_queued(report: SweepReport) -> None:
    if report.redis_down:
        return
    now = timezone.now()
    queued_before = now - timedelta(seconds=settings.JOBS_QUEUED_GRACE_SECONDS)
    # RQ marks a job `started` when a worker takes it, a moment before our runner claims the
    # row; still `started` in Redis and `queued` here long after that, its worker died.
    started_before = now - timedelta(seconds=max(settings.JOBS_STALE_AFTER_SECONDS, settings.JOBS_QUEUED_GRACE_SECONDS))
    queued = Job.objects.filter(status=JobStatus.QUEUED, queued_at__lt=queued_before).order_by("queued_at", "pk")
    page = queued
    while True:
        # Every queued row is checked, a batch at a time, so a long healthy backlog cannot
        # hide a lost job behind it.
        rows = list(page.values_list("pk", "queue", "queued_at")[:BATCH])
        if not rows:
            return
        last_pk, _, last_queued_at = rows[-1]
        page = queued.filter(Q(queued_at__gt=last_queued_at) | Q(queued_at=last_queued_at, pk__gt=last_pk))
        try:
            seen = _rq_view(rows)
        except (RedisError, OSError) as error:
            logger.warning("sweep: cannot read RQ job statuses (%s)", error)
            report.redis_down = True
            return
        for pk, queue, queued_at in rows:
            status = seen[pk]
            lost = (
                status is None
                or status in RQ_GONE
                or status == TAKEN_BUT_NOT_STARTED
                or (status == RQStatus.STARTED and queued_at is not None and queued_at < started_before)
            )
            if not lost:
                continue
            # Whoever moves queued_at first re-pushes: two sweepers never push a lost job twice.
            if not Job.objects.filter(pk=pk, status=JobStatus.QUEUED, queued_at=queued_at).update(
                queued_at=timezone.now()
            ):
                continue
            if not job_push_rollback_unsafe(job_id=pk, queue=queue):
                report.redis_down = True  # still queued and not in Redis: the next pass retries it
                return
            report.repushed += 1
            if status == TAKEN_BUT_NOT_STARTED:
                _forget_in_intermediate_list(queue, pk)
            logger.warning("job %s re-pushed: in Redis it was %s", pk, status or "missing")


# What _rq_view says of a job RQ still calls `queued` that is in no queue list: a worker took
# it (BLPOP/BLMOVE) and died before RQ marked it started. No live worker stays there longer
# than a few milliseconds; if one is there right now, the re-push is a duplicate delivery,
# which the runner's claim turns into a no-op.
TAKEN_BUT_NOT_STARTED = "taken by a worker that never started it"


def _forget_in_intermediate_list(queue_name: str, pk) -> None:
    # A worker listening on one queue moves what it takes to RQ's intermediate list; left
    # there, RQ's own clean-up would later mark the re-pushed copy failed.
    queue = rq_queue(queue_name)
    try:
        queue.connection.lrem(queue.intermediate_queue_key, 0, str(pk))
    except (RedisError, OSError) as error:
        logger.warning("job %s: could not clear RQ's intermediate list (%s)", pk, error)


def _rq_view(rows) -> dict:
    """What RQ holds for each row: its status, None when Redis has no such job, or
    TAKEN_BUT_NOT_STARTED. A few round trips per queue, whatever the queue's length."""
    seen = {}
    for queue_name, group in groupby(sorted(rows, key=lambda row: row[1]), key=lambda row: row[1]):
        pks = [pk for pk, _, _ in group]
        queue = rq_queue(queue_name)
        redis = queue.connection
        with redis.pipeline(transaction=False) as pipeline:
            for pk in pks:
                pipeline.hmget(RQJob.key_for(str(pk)), "status", "enqueued_at")
            pipeline.lindex(queue.key, 0)
            *fields, head = pipeline.execute()
        waiting = {}  # RQ says queued: pk -> enqueued_at
        for pk, (status, enqueued_at) in zip(pks, fields, strict=True):
            seen[pk] = status.decode() if status is not None else None
            if seen[pk] == RQStatus.QUEUED:
                waiting[pk] = enqueued_at or b""
        if not waiting:
            continue
        # A queue list is first in, first out: a job RQ enqueued before the job at the head
        # of its list is no longer in it, unless two pushers' clocks or timing disagree.
        # LPOS settles those few; nothing here scans the list for the jobs that wait in it.
        head_enqueued_at = (
            cast(bytes | None, redis.hget(RQJob.key_for(head.decode()), "enqueued_at")) if head is not None else None
        )
        suspects = [
            pk for pk, enqueued_at in waiting.items() if head_enqueued_at is None or enqueued_at < head_enqueued_at
        ]
        if not suspects:
            continue
        with redis.pipeline(transaction=False) as pipeline:
            for pk in suspects:
                pipeline.lpos(queue.key, str(pk))
            for pk, position in zip(suspects, pipeline.execute(), strict=True):
                if position is None:
                    seen[pk] = TAKEN_BUT_NOT_STARTED
    return seen


class PeriodicSweeper:
    """The periodic process (`manage.py run_sweeper`): a pass every JOBS_SWEEP_INTERVAL_SECONDS
    in this process, not as an RQ job, so no backlog on any queue can delay the rescue of the
    jobs behind it. It rides out PostgreSQL and Redis outages: one log line when one starts,
    one when it ends, back-off in between. Safe to run twice (see jobs_sweep)."""

    def __init__(self):
        self.database = Outage("PostgreSQL")
        self.redis = Outage("Redis")

    def run_forever(self, stop: threading.Event) -> None:
        logger.info("sweeper: a pass every %s s", settings.JOBS_SWEEP_INTERVAL_SECONDS)
        while not stop.is_set():
            stop.wait(self.run_once())

    def run_once(self) -> float:
        """One pass; the seconds to wait before the next."""
        began = time.monotonic()
        interval = settings.JOBS_SWEEP_INTERVAL_SECONDS
        try:
            close_broken_or_expired_db_connections()
            report = jobs_sweep()
        except Exception as error:
            if database_unreachable(error):
                return self.database.failed(error, "sweeping")
            if isinstance(error, REDIS_UNREACHABLE):
                return min(interval, self.redis.failed(error, "sweeping"))
            logger.exception("sweep failed; trying again in %s s", interval)
            return interval
        self.database.ended()
        if report.redis_down:
            # Redis-free work (dead workers' jobs) goes on at the usual pace meanwhile.
            self.redis.failed("pushes refused", "sweeping")
        else:
            self.redis.ended()
        sweep_recorded()
        if report.pushed or report.repushed or report.recovered or report.failed:
            logger.info("sweep: %s", report)
        self._run_due_periodic()
        return max(0.0, interval - (time.monotonic() - began))

    def _run_due_periodic(self) -> None:
        """The apps' periodic jobs (backoffice.periodic: dashboard figures), each at its own
        interval, in this process. Each is safe to run twice, so two sweepers are harmless."""
        now = time.monotonic()
        last_runs = self.__dict__.setdefault("periodic_last_run", {})
        for periodic in registered_periodic():
            if now - last_runs.get(periodic.name, -periodic.interval_seconds) < periodic.interval_seconds:
                continue
            last_runs[periodic.name] = now
            try:
                periodic.func(**periodic.kwargs)
            except Exception:
                logger.exception(
                    "periodic job %s failed; trying again in %s s", periodic.name, periodic.interval_seconds
                )
