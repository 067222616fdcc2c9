"""The ledger's and reconciliation's periodic jobs run in the sweeper process at their cron
slots (no rqcron process, no queue backlog in front of them)."""

from datetime import UTC, datetime

import pytest
import time_machine

from backoffice.models import Job
from backoffice.periodic import CronSchedule, registered_periodic
from backoffice.sweeper import PeriodicSweeper
from reconciliation.cron import FETCH_JOB

pytestmark = pytest.mark.needs_postgres


@pytest.fixture
def fresh_schedules():
    """The registered schedules as in a sweeper process that just started, before and after
    (their last slot is process state: a slot seen here must not make other tests' sweeps run
    the payouts)."""

    def forget():
        for periodic in registered_periodic():
            if isinstance(periodic.func, CronSchedule):
                periodic.func.forget_last_slot()

    forget()
    yield
    forget()


def test_a_cron_schedule_runs_once_per_slot_and_never_catches_up_at_start():
    calls = []
    schedule = CronSchedule(lambda: calls.append(1), "30 2 * * *")

    with time_machine.travel(datetime(2026, 11, 20, 1, 0, tzinfo=UTC), tick=False) as clock:
        schedule()  # the process starts after yesterday's slot: not caught up
        clock.move_to(datetime(2026, 11, 20, 2, 29, tzinfo=UTC))
        schedule()
        assert calls == []
        clock.move_to(datetime(2026, 11, 20, 2, 30, 5, tzinfo=UTC))
        schedule()
        schedule()
        clock.move_to(datetime(2026, 11, 21, 2, 31, tzinfo=UTC))
        schedule()

    assert calls == [1, 1]


def test_the_sweeper_queues_the_report_fetches_at_their_slot(settings, db, fresh_schedules):
    settings.PAYMENTS_PROCESSOR_URL = "http://processor.invalid"
    names = {periodic.name for periodic in registered_periodic()}
    assert {"reconciliation_fetch_reports", "ledger_daily_payouts", "ledger_drift_check"} <= names
    assert "ledger_release_due_funds" in names
    sweeper = PeriodicSweeper()

    with time_machine.travel(datetime(2026, 11, 20, 2, 29, 50, tzinfo=UTC), tick=False) as clock:
        sweeper.run_once()
        assert not Job.objects.filter(func=FETCH_JOB).exists()
        clock.move_to(datetime(2026, 11, 20, 2, 30, 30, tzinfo=UTC))
        sweeper.__dict__["periodic_last_run"] = {}  # every periodic job due again
        sweeper.run_once()

    assert Job.objects.filter(func=FETCH_JOB).count() == settings.RECONCILIATION_FETCH_DAYS
