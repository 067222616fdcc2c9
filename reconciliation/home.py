"""Reconciliation on the operations dashboard: open exceptions over time, from a daily snapshot
(`backoffice.Figure`) the sweeper refreshes, so drawing the chart reads at most 30 days of rows."""

from datetime import timedelta

import pygal
from django.db.models import Count
from django.utils import timezone

from backoffice.charts import new_chart, register_chart
from backoffice.dashboard import register_card
from backoffice.figures import day_start, figures_read, figures_replace
from reconciliation.models import Discrepancy, DiscrepancyKind, DiscrepancyStatus

OPEN_SERIES = "reconciliation_open"
TOTAL = "total"
DAYS = 30


def open_exceptions_refresh() -> int:
    """Today's snapshot of the open exceptions per kind (the last refresh of a day stays as that
    day's figure). Counts entries on the queue's index (status, kind, day)."""
    bucket = day_start()
    counts = dict(
        Discrepancy.objects.filter(status=DiscrepancyStatus.OPEN)
        .values_list("kind")
        .annotate(count=Count("id"))
        .values_list("kind", "count")
    )
    rows = [(OPEN_SERIES, bucket, kind, count) for kind, count in counts.items()]
    rows.append((OPEN_SERIES, bucket, TOTAL, sum(counts.values())))
    return figures_replace(series=[OPEN_SERIES], buckets=[bucket], rows=rows)


def _may_see(request) -> bool:
    return request.user.has_perm("reconciliation.view_discrepancy")


def open_exceptions_chart(request):
    if not _may_see(request):
        return None
    today = day_start()
    days = [today - timedelta(days=back) for back in range(DAYS - 1, -1, -1)]
    table = figures_read([OPEN_SERIES], since=days[0])[OPEN_SERIES]
    chart = new_chart(pygal.StackedBar, title=f"Open reconciliation exceptions, end of each day ({DAYS} days)")
    chart.x_labels = [f"{timezone.localtime(day):%d %b}" for day in days]
    chart.x_labels_major = chart.x_labels[::5]
    for kind, label in DiscrepancyKind.choices:
        # A day with no snapshot (no sweeper ran) is a gap, not a zero.
        values = [table[day].get(kind, 0) if TOTAL in table.get(day, {}) else None for day in days]
        if any(values):
            chart.add(label, values, allow_interruptions=True)
    return chart


def open_exceptions_context(request) -> dict | None:
    return {} if _may_see(request) else None


def register() -> None:
    register_card(
        name="reconciliation.open",
        template="reconciliation/dashboard/open.html",
        context=open_exceptions_context,
        order=40,
        wide=True,
    )
    register_chart("reconciliation-open", open_exceptions_chart)
