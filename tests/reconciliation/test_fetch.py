from datetime import timedelta

import pytest
from django.utils import timezone

from backoffice.models import Job
from reconciliation.cron import FETCH_JOB, fetch_reports_periodic
from reconciliation.fetch import ReportNotReady
from reconciliation.jobs import fetch_settlement_report
from reconciliation.models import MatchingRun, SettlementFile
from tests.reconciliation.conftest import PROCESSOR

pytestmark = pytest.mark.needs_postgres


def test_the_fetch_job_downloads_ingests_and_queues_matching_once(httpserver, settings, make_day):
    generated = make_day(payments=50, per_kind=1)
    settings.PAYMENTS_PROCESSOR_URL = httpserver.url_for("/")
    path = f"/v1/settlements/{generated.day}.csv"
    httpserver.expect_request(path).respond_with_data(generated.csv_bytes, content_type="text/csv")

    first = fetch_settlement_report(processor=PROCESSOR, day=str(generated.day))
    second = fetch_settlement_report(processor=PROCESSOR, day=str(generated.day))

    settlement_file = SettlementFile.objects.get()
    assert first == {"file": settlement_file.pk, "new": True, "lines": generated.lines}
    assert second["new"] is False
    assert (settlement_file.source, settlement_file.filename) == ("fetch", f"{generated.day}.csv")
    assert MatchingRun.objects.filter(day=generated.day).count() == 1


def test_a_report_not_ready_raises_so_the_job_retries(httpserver, settings, past_day, db):
    settings.PAYMENTS_PROCESSOR_URL = httpserver.url_for("/")
    httpserver.expect_request(f"/v1/settlements/{past_day}.csv").respond_with_data("no such day", status=404)

    with pytest.raises(ReportNotReady):
        fetch_settlement_report(processor=PROCESSOR, day=str(past_day))
    assert not SettlementFile.objects.exists()


def test_the_cron_queues_one_fetch_per_missing_day(settings, db):
    settings.PAYMENTS_PROCESSOR_URL = "http://processor.invalid"
    settings.RECONCILIATION_FETCH_DAYS = 2

    fetch_reports_periodic()
    fetch_reports_periodic()  # a second cron process, or a second tick: nothing more

    today = timezone.now().date()
    days = sorted(job.kwargs["day"] for job in Job.objects.filter(func=FETCH_JOB))
    assert days == [str(today - timedelta(days=2)), str(today - timedelta(days=1))]
