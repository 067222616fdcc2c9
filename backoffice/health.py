"""What the queues, workers and sweeper look like right now: read by the dashboard, /readyz
and /metrics. Reads only Redis and indexed rows of the job ledger."""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import django_rq
from django.conf import settings
from django.db.models import Count, Min
from django.utils import timezone
from redis.exceptions import RedisError
from rq import Worker

from backoffice.models import Job, JobStatus
from backoffice.services import QUEUES

logger = logging.getLogger(__name__)

LAST_SWEEP_KEY = "paydesk:sweeper:last_run_at"
WAITING = (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RETRYING)


class RedisUnavailable(Exception):
    pass


@dataclass(frozen=True)
class QueueHealth:
    name: str
    depth: int | None  # jobs waiting in Redis; None when Redis did not answer
    oldest_seconds: float | None  # how long the oldest due job of the ledger has waited
    waiting: int  # due jobs in the ledger not yet running (pending, queued, retrying)
    running: int


@dataclass(frozen=True)
class WorkerHealth:
    name: str
    state: str
    queues: list[str]
    last_heartbeat: datetime | None


def redis_connection():
    return django_rq.get_connection("default")


def queue_health() -> list[QueueHealth]:
    now = timezone.now()
    ledger = {
        row["queue"]: row
        for row in Job.objects.filter(status__in=WAITING, run_at__lte=now)
        .values("queue")
        .annotate(waiting=Count("pk"), oldest=Min("run_at"))
        .order_by()
    }
    running = dict(
        Job.objects.filter(status=JobStatus.RUNNING).values("queue").annotate(n=Count("pk")).values_list("queue", "n")
    )
    depths = _redis_depths()
    report = []
    for name in QUEUES:
        row = ledger.get(name, {})
        oldest = row.get("oldest")
        report.append(
            QueueHealth(
                name=name,
                depth=depths.get(name),
                oldest_seconds=max((now - oldest).total_seconds(), 0.0) if oldest else None,
                waiting=row.get("waiting", 0),
                running=running.get(name, 0),
            )
        )
    return report


def _redis_depths() -> dict[str, int]:
    try:
        return {name: django_rq.get_queue(name).count for name in QUEUES}
    except (RedisError, OSError) as error:
        logger.warning("queue depths unavailable: %s", error)
        return {}


def workers() -> list[WorkerHealth]:
    """Workers registered in Redis (a registration expires when its worker stops beating)."""
    try:
        found = Worker.all(connection=redis_connection())
    except (RedisError, OSError) as error:
        raise RedisUnavailable(str(error)) from error
    return [
        WorkerHealth(
            name=worker.name,
            state=str(worker.get_state()),
            queues=worker.queue_names(),
            last_heartbeat=_aware(worker.last_heartbeat),
        )
        for worker in found
    ]


def sweep_recorded() -> None:
    """Called by each periodic sweep, so pages and probes can tell how long ago it ran."""
    try:
        redis_connection().set(LAST_SWEEP_KEY, timezone.now().isoformat(), ex=7 * 24 * 3600)
    except (RedisError, OSError) as error:
        logger.warning("could not record the sweep time: %s", error)


def last_sweep_at() -> datetime | None:
    try:
        value = redis_connection().get(LAST_SWEEP_KEY)
    except (RedisError, OSError) as error:
        raise RedisUnavailable(str(error)) from error
    return datetime.fromisoformat(value.decode()) if value else None


def sweep_overdue_after_seconds() -> float:
    """A sweeper that has not run for this long is not running."""
    return 3 * settings.JOBS_SWEEP_INTERVAL_SECONDS + 30


def _aware(moment: datetime | None) -> datetime | None:
    if moment is not None and timezone.is_naive(moment):
        return timezone.make_aware(moment, UTC)
    return moment
