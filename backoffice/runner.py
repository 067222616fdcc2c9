"""The one runner: what RQ executes for every backoffice.Job."""

import logging
import os
import random
import socket
import threading
import traceback as tb
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, connection
from django.db.models import F
from django.utils import timezone
from django.utils.module_loading import import_string

from backoffice.models import Job, JobStatus

logger = logging.getLogger(__name__)

CLAIMABLE = (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RETRYING)
WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"


def retry_delay_seconds(attempts: int) -> float:
    """Back-off before the next attempt, with +-20% jitter so retries of a burst spread out."""
    schedule = settings.JOBS_RETRY_BACKOFF_SECONDS
    base = schedule[min(attempts - 1, len(schedule) - 1)] if schedule else 0.0
    return base * random.uniform(0.8, 1.2)


class _Heartbeat:
    """Stamps heartbeat_at while a job body runs, so the sweeper can tell a live job from
    one whose worker was killed. The thread opens its own connection only if the job
    outlives the first beat."""

    def __init__(self, job_id, attempt: int):
        self.job_id, self.attempt = job_id, attempt
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat-{job_id}")

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join()

    def _beat(self):
        try:
            while not self.stopped.wait(settings.JOBS_HEARTBEAT_SECONDS):
                Job.objects.filter(pk=self.job_id, status=JobStatus.RUNNING, attempts=self.attempt).update(
                    heartbeat_at=timezone.now()
                )
        except Exception:  # a missed beat must never break the job itself
            logger.exception("heartbeat of job %s failed", self.job_id)
        finally:
            connection.close()


def run_job(job_id: str) -> dict:
    """Claim the Job, run its function, record the outcome. A second delivery of the same
    Job (requeued by hand, pushed twice) finds it claimed or finished and does nothing."""
    close_old_connections()
    now = timezone.now()
    claimed = Job.objects.filter(pk=job_id, status__in=CLAIMABLE).update(
        status=JobStatus.RUNNING,
        attempts=F("attempts") + 1,
        started_at=now,
        heartbeat_at=now,
        finished_at=None,
        worker_name=WORKER_NAME,
    )
    if not claimed:
        status = Job.objects.filter(pk=job_id).values_list("status", flat=True).first()
        logger.info("job %s not run: it is %s", job_id, status or "missing")
        return {"skipped": status or "missing"}

    job = Job.objects.get(pk=job_id)
    mine = Job.objects.filter(pk=job.pk, status=JobStatus.RUNNING, attempts=job.attempts)
    try:
        with _Heartbeat(job.pk, job.attempts):
            result = import_string(job.func)(**job.kwargs)
    except Exception as error:
        finished = timezone.now()
        fields = {
            "finished_at": finished,
            "last_error": f"{type(error).__name__}: {error}"[:2000],
            "traceback": tb.format_exc()[-8000:],
        }
        if job.attempts < job.max_attempts:
            fields.update(
                status=JobStatus.RETRYING,
                run_at=finished + timedelta(seconds=retry_delay_seconds(job.attempts)),
            )
        else:
            fields.update(status=JobStatus.FAILED)
        if not mine.update(**fields):
            logger.warning("job %s outcome dropped: it was taken over while running", job.pk)
        logger.warning("job %s attempt %s failed: %s", job.pk, job.attempts, fields["last_error"])
        return {"status": fields["status"]}
    if not mine.update(status=JobStatus.SUCCEEDED, finished_at=timezone.now(), result=result, last_error=""):
        logger.warning("job %s outcome dropped: it was taken over while running", job.pk)
    return {"status": JobStatus.SUCCEEDED}
