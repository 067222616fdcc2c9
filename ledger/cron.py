"""The ledger's periodic jobs: `manage.py rqcron ledger.cron` (the Procfile's `ledger` line; run
exactly one). Each is safe to run twice at once: releases take rows with SKIP LOCKED, a day's
payout has a unique key, a drift check only reads."""

from django.conf import settings
from rq import cron

from ledger.jobs import check_drift, release_due_funds, run_daily_payouts

cron.register(
    release_due_funds,
    queue_name="default",
    interval=settings.LEDGER_RELEASE_INTERVAL_SECONDS,
    job_timeout=600,
    result_ttl=3600,
    name="ledger_release_due_funds",
)
cron.register(
    run_daily_payouts,
    queue_name="default",
    cron=settings.LEDGER_PAYOUTS_CRON,
    job_timeout=1800,
    result_ttl=86400,
    name="ledger_daily_payouts",
)
cron.register(
    check_drift,
    queue_name="default",
    cron=settings.LEDGER_DRIFT_CHECK_CRON,
    job_timeout=1800,
    result_ttl=86400,
    name="ledger_drift_check",
)
