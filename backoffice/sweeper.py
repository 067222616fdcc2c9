"""The sweeper: finishes what a crash, a Redis outage or a flushed Redis left behind.

One pass (`jobs_sweep`) is safe to run from several processes at once: each step locks
the rows it takes with SKIP LOCKED, so two sweepers never take the same row, and the
runner's claim makes a job pushed twice run once.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta

import django_rq
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from redis.exceptions import RedisError
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus

from backoffice.models import Job, JobStatus
from backoffice.services import job_push_rollback_unsafe

logger = logging.getLogger(__name__)

BATCH = 500
RQ_GONE = {RQStatus.FAILED, RQStatus.STOPPED, RQStatus.CANCELED}


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
    """One pass: push due pending/retrying jobs, re-push queued jobs Redis lost, and
    retry (or fail) running jobs whose worker stopped beating."""
    report = SweepReport()
    now = timezone.now()
    _recover_dead_running(report, now)
    _push_due(report, now)
    _repush_lost_queued(report, now)
    return report


def _push(report: SweepReport, job: Job, now) -> bool:
    if report.redis_down or not job_push_rollback_unsafe(job_id=job.pk, queue=job.queue):
        report.redis_down = True
        return False
    job.status, job.queued_at = JobStatus.QUEUED, now
    job.save(update_fields=["status", "queued_at"])
    return True


def _push_due(report: SweepReport, now) -> None:
    # A brand-new pending row is normally pushed by its own on-commit hook; the grace
    # keeps the sweeper from racing that push (a race would be harmless, only wasteful).
    pending_before = now - timedelta(seconds=settings.JOBS_PENDING_GRACE_SECONDS)
    with transaction.atomic():
        due = Job.objects.select_for_update(skip_locked=True).filter(
            status__in=(JobStatus.PENDING, JobStatus.RETRYING), run_at__lte=now
        )
        due = due.exclude(status=JobStatus.PENDING, created_at__gt=pending_before)
        for job in due.order_by("run_at")[:BATCH]:
            if _push(report, job, now):
                report.pushed += 1


def _repush_lost_queued(report: SweepReport, now) -> None:
    if report.redis_down:
        return
    queued_before = now - timedelta(seconds=settings.JOBS_QUEUED_GRACE_SECONDS)
    with transaction.atomic():
        queued = list(
            Job.objects.select_for_update(skip_locked=True)
            .filter(status=JobStatus.QUEUED, queued_at__lt=queued_before)
            .order_by("queued_at")[:BATCH]
        )
        if not queued:
            return
        try:
            connection = django_rq.get_connection("default")
            in_redis = RQJob.fetch_many([str(job.pk) for job in queued], connection=connection)
            statuses = [rq_job.get_status(refresh=False) if rq_job else None for rq_job in in_redis]
        except (RedisError, OSError):
            report.redis_down = True
            return
        for job, status in zip(queued, statuses):
            if status is None or status in RQ_GONE:
                if _push(report, job, now):
                    report.repushed += 1


def _recover_dead_running(report: SweepReport, now) -> None:
    silent_since = now - timedelta(seconds=settings.JOBS_STALE_AFTER_SECONDS)
    with transaction.atomic():
        dead = Job.objects.select_for_update(skip_locked=True).filter(
            status=JobStatus.RUNNING, heartbeat_at__lt=silent_since
        )
        for job in dead[:BATCH]:
            job.last_error = f"Worker {job.worker_name or '?'} stopped (no heartbeat since {job.heartbeat_at:%Y-%m-%d %H:%M:%S%z})"
            job.finished_at = now
            if job.attempts < job.max_attempts:
                job.status, job.run_at = JobStatus.RETRYING, now
                report.recovered += 1
            else:
                job.status = JobStatus.FAILED
                report.failed += 1
            job.save(update_fields=["status", "run_at", "last_error", "finished_at"])
            logger.warning("job %s: %s -> %s", job.pk, job.last_error, job.status)


def jobs_sweep_periodic() -> str:
    """Entry point for the cron scheduler."""
    report = jobs_sweep()
    if report.pushed or report.repushed or report.recovered or report.failed:
        logger.info("sweep: %s", report)
    return str(report)
