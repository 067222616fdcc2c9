"""Pre-aggregated figures (`backoffice.Figure`): how apps write them and how pages read them.

A refresher recomputes whole buckets from the source tables and replaces them in one
transaction, so running it twice, or two at once, leaves the same rows.
"""

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count, Q
from django.db.models.functions import TruncHour
from django.utils import timezone

from backoffice.models import Figure, Job, JobStatus

JOB_SERIES = ("jobs_succeeded", "jobs_failed")


def day_start(moment: datetime | None = None) -> datetime:
    """Midnight of the day `moment` falls in, in the project's time zone."""
    local = timezone.localtime(moment or timezone.now())
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def hour_start(moment: datetime | None = None) -> datetime:
    return (moment or timezone.now()).replace(minute=0, second=0, microsecond=0)


def figures_replace(*, series: Iterable[str], buckets: Iterable[datetime], rows: Iterable[tuple]) -> int:
    """Replace every figure of `series` in `buckets` by `rows` of (series, bucket, key, value)."""
    series, buckets = list(series), list(buckets)
    figures = [Figure(series=name, bucket=bucket, key=key or "", value=value or 0) for name, bucket, key, value in rows]
    with transaction.atomic():
        Figure.objects.filter(series__in=series, bucket__in=buckets).delete()
        Figure.objects.bulk_create(figures)
    return len(figures)


def figures_read(series: Iterable[str], since: datetime) -> dict[str, dict[datetime, dict[str, int]]]:
    """{series: {bucket: {key: value}}} for buckets at or after `since`."""
    table: dict = defaultdict(lambda: defaultdict(dict))
    for name, bucket, key, value in Figure.objects.filter(series__in=list(series), bucket__gte=since).values_list(
        "series", "bucket", "key", "value"
    ):
        table[name][bucket][key] = value
    return table


def figures_computed_at(series: Iterable[str]) -> datetime | None:
    latest = Figure.objects.filter(series__in=list(series)).order_by("-computed_at").first()
    return latest.computed_at if latest else None


def job_figures_refresh(*, hours: int = 2) -> int:
    """Jobs finished per hour and queue, succeeded and failed, for the last `hours` hours."""
    buckets = [hour_start() - timedelta(hours=back) for back in range(hours)]
    rows = (
        Job.objects.filter(finished_at__gte=buckets[-1])
        .annotate(hour=TruncHour("finished_at"))
        .values("hour", "queue")
        .annotate(
            succeeded=Count("pk", filter=Q(status=JobStatus.SUCCEEDED)),
            failed=Count("pk", filter=Q(status=JobStatus.FAILED)),
        )
    )
    figures = []
    for row in rows:
        figures.append(("jobs_succeeded", row["hour"], row["queue"], row["succeeded"]))
        figures.append(("jobs_failed", row["hour"], row["queue"], row["failed"]))
    return figures_replace(series=JOB_SERIES, buckets=buckets, rows=figures)
