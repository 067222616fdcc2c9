"""The ledger's periodic jobs, run by the sweeper process (`manage.py run_sweeper`) in its own
loop, so no backlog on a queue delays them. Each is safe to run twice at once: releases take
rows with SKIP LOCKED, a day's payout has a unique key, a drift check only reads."""

from django.conf import settings

from backoffice.periodic import CronSchedule, register_periodic
from ledger.jobs import check_drift, release_due_funds, run_daily_payouts


def register() -> None:
    register_periodic(
        release_due_funds, interval_seconds=settings.LEDGER_RELEASE_INTERVAL_SECONDS, name="ledger_release_due_funds"
    )
    register_periodic(
        CronSchedule(run_daily_payouts, settings.LEDGER_PAYOUTS_CRON), interval_seconds=30, name="ledger_daily_payouts"
    )
    register_periodic(
        CronSchedule(check_drift, settings.LEDGER_DRIFT_CHECK_CRON), interval_seconds=30, name="ledger_drift_check"
    )
