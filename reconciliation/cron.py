"""Periodic jobs of reconciliation, run by the sweeper process (`manage.py run_sweeper`) in its
own loop at RECONCILIATION_FETCH_CRON, so no backlog on a queue delays them."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from backoffice.models import Job, JobStatus
from backoffice.periodic import CronSchedule, register_periodic
from backoffice.runner import close_broken_or_expired_db_connections
from backoffice.services import job_enqueue
from reconciliation.models import SettlementFile

FETCH_JOB = "reconciliation.jobs.fetch_settlement_report"
WAITING = (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.RETRYING)


def fetch_reports_periodic() -> str:
    """Queue a fetch of each of the last RECONCILIATION_FETCH_DAYS finished processor days
    that has no fetched report yet; safe to run twice (a waiting fetch is not queued again)."""
    close_broken_or_expired_db_connections()
    if not settings.PAYMENTS_PROCESSOR_URL:
        return "PAYMENTS_PROCESSOR_URL is not set: nothing fetched"
    processor = settings.RECONCILIATION_PROCESSOR
    today = timezone.now().date()
    queued = []
    for back in range(1, settings.RECONCILIATION_FETCH_DAYS + 1):
        day = today - timedelta(days=back)
        if SettlementFile.objects.filter(processor=processor, day=day, source=SettlementFile.Source.FETCH).exists():
            continue
        kwargs = {"processor": processor, "day": day.isoformat()}
        if Job.objects.filter(func=FETCH_JOB, kwargs=kwargs, status__in=WAITING).exists():
            continue
        job_enqueue(func=FETCH_JOB, kwargs=kwargs, queue="default")
        queued.append(day.isoformat())
    return f"fetch queued for {', '.join(queued) or 'no day'}"


def register() -> None:
    register_periodic(
        CronSchedule(fetch_reports_periodic, settings.RECONCILIATION_FETCH_CRON),
        interval_seconds=30,
        name="reconciliation_fetch_reports",
    )
