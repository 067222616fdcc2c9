"""Periodic jobs for `manage.py rqcron backoffice.cron` (run exactly one cron process;
every job here is safe to run twice at once anyway)."""

from django.conf import settings
from rq import cron

from backoffice.sweeper import jobs_sweep_periodic

cron.register(
    jobs_sweep_periodic,
    queue_name="default",
    interval=settings.JOBS_SWEEP_INTERVAL_SECONDS,
    job_timeout=120,
    result_ttl=600,
    name="sweep_jobs",
)
