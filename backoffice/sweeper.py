"""The sweeper: finishes what a crash, a Redis outage or a flushed Redis left behind.

One pass (`jobs_sweep`) is safe to run from several processes at once, and no row lock is
held while Redis is called:
- due `pending`/`retrying` rows are taken with SKIP LOCKED and marked `queued` in one short
  transaction, then pushed; a push that fails puts its row back;
- a `queued` row is taken as lost from Redis only once it is older than
  JOBS_QUEUED_GRACE_SECONDS (which must exceed the few milliseconds a pass spends pushing
  what it took), and is re-pushed by whichever sweeper moves its `queued_at` first;
- the runner's claim makes a job that is delivered twice anyway run once.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta
from itertools import groupby

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone
from redis.exceptions import RedisError
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus

from backoffice.models import Job, JobStatus
from backoffice.runner import close_broken_or_expired_db_connections
from backoffice.services import job_push_rollback_unsafe, rq_queue

logger = logging.getLogger(__name__)

BATCH = 500
# What RQ says about a job that will never run from where it is now.
RQ_GONE = {RQStatus.FAILED.value, RQStatus.STOPPED.value, RQStatus.CANCELED.value}


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
            statuses = _rq_statuses(rows)
        except (RedisError, OSError) as error:
            logger.warning("sweep: cannot read RQ job statuses (%s)", error)
            report.redis_down = True
            return
        for pk, queue, queued_at in rows:
            status = statuses[pk]
            lost = status is None or status in RQ_GONE or (status == RQStatus.STARTED and queued_at < started_before)
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
            logger.warning("job %s was %s in Redis: re-pushed", pk, status or "missing")


def _rq_statuses(rows) -> dict:
    """The status RQ holds for each job (None when Redis has no such job), one round trip per queue."""
    statuses = {}
    for queue, group in groupby(sorted(rows, key=lambda row: row[1]), key=lambda row: row[1]):
        pks = [pk for pk, _, _ in group]
        with rq_queue(queue).connection.pipeline(transaction=False) as pipeline:
            for pk in pks:
                pipeline.hget(RQJob.key_for(str(pk)), "status")
            for pk, status in zip(pks, pipeline.execute(), strict=True):
                statuses[pk] = status.decode() if status is not None else None
    return statuses


def jobs_sweep_periodic() -> str:
    """Entry point for the cron scheduler (an RQ job, not run through run_job)."""
    close_broken_or_expired_db_connections()
    report = jobs_sweep()
    if report.pushed or report.repushed or report.recovered or report.failed:
        logger.info("sweep: %s", report)
    return str(report)
