"""Thin job bodies of reconciliation: load, call the service, return a small result."""

from datetime import date

from django.utils import timezone

from reconciliation.fetch import settlement_report_fetch
from reconciliation.home import open_exceptions_refresh
from reconciliation.matching import match_day
from reconciliation.models import Discrepancy, DiscrepancyStatus, MatchingRun
from reconciliation.services import matching_enqueue


def match_processor_day(*, run_id: int) -> dict:
    """Match one processor day (idempotent: a second run changes nothing more)."""
    run = MatchingRun.objects.get(pk=run_id)
    progress = match_day(processor=run.processor, day=run.day)
    open_entries = Discrepancy.objects.filter(processor=run.processor, day=run.day, status=DiscrepancyStatus.OPEN)
    run.summary = {"lines": progress.total, "open": open_entries.count()}
    run.finished_at = timezone.now()
    run.save(update_fields=["summary", "finished_at"])
    open_exceptions_refresh()  # the dashboard's chart shows the run at once
    return run.summary


def fetch_settlement_report(*, processor: str, day: str) -> dict:
    """Fetch and ingest the day's report, then queue its matching (a report fetched before
    changes nothing and queues nothing)."""
    result = settlement_report_fetch(day=date.fromisoformat(day), processor=processor)
    if result.created:
        matching_enqueue(processor=processor, day=result.file.day)
    return {"file": result.file.pk, "new": result.created, "lines": result.file.line_count}
