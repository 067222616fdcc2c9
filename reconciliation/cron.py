"""Periodic jobs of reconciliation: `manage.py rqcron reconciliation.cron` (the Procfile's
`reconcile` line; run one)."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from rq import cron

from backoffice.models import Job, JobStatus
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


cron.register(
    fetch_reports_periodic,
    queue_name="default",
    cron=settings.RECONCILIATION_FETCH_CRON,
    job_timeout=120,
    result_ttl=3600,
    name="fetch_settlement_reports",
)
