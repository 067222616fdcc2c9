"""Prometheus metrics at /metrics (prometheus-client), for every process on every machine.

Workers run on many machines, so what they count lives in Redis, not in process memory:
`counter_inc` and `histogram_observe` add to hashes under `paydesk:metrics:*` in one
pipelined round trip, and never fail the caller. At scrape time a collector reads those
hashes, plus the current state from PostgreSQL (indexed counts) and Redis (queues, workers).
Redis being flushed resets the counters, which Prometheus' rate() handles like a restart.
Every metric is described in docs/operations.md.
"""

import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterable

from django.conf import settings
from django.db.models import Count
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from redis.exceptions import RedisError

from backoffice.health import RedisUnavailable, last_sweep_at, queue_health, redis_connection, workers
from backoffice.models import Job, JobStatus

logger = logging.getLogger(__name__)

PREFIX = "paydesk:metrics:"
# Seconds. Jobs run from milliseconds (a charge) to minutes (an export).
JOB_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
PROCESSOR_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Counters and histograms workers write, with their help text: the collector reads these.
COUNTERS = {
    "jobs_finished": ("Job runs finished, by queue, function and outcome (succeeded, retrying, failed).",),
    "webhook_deliveries": ("Webhook and e-mail delivery tries, by channel and outcome (succeeded, failed, gone).",),
}
HISTOGRAMS = {
    "job_duration_seconds": ("How long job bodies ran, by queue and function.", JOB_DURATION_BUCKETS),
    "processor_call_seconds": (
        "Latency of calls to the payment processor, by operation (charge, lookup, refund) and outcome.",
        PROCESSOR_LATENCY_BUCKETS,
    ),
}
_last_warning = 0.0


def _labels_key(labels: dict) -> str:
    return json.dumps(labels, sort_keys=True, separators=(",", ":"))


def _warn(error: Exception) -> None:
    global _last_warning
    if time.monotonic() - _last_warning > 60:  # once a minute at most: metrics must never flood the log
        _last_warning = time.monotonic()
        logger.warning("metrics not recorded (Redis: %s)", error)


def metrics_record(*, counters: Iterable[tuple[str, dict]] = (), observations: Iterable[tuple[str, dict, float]] = ()):
    """Add 1 to each (counter, labels) and record each (histogram, labels, value), in one
    round trip to Redis, one command per field however many share it (a batch of jobs).
    Never raises: a metric is not worth failing a job for."""
    increments: dict[tuple[str, str], int] = defaultdict(int)
    sums: dict[tuple[str, str], float] = defaultdict(float)
    for name, labels in counters:
        assert name in COUNTERS, name
        increments[PREFIX + name, _labels_key(labels)] += 1
    for name, labels, value in observations:
        assert name in HISTOGRAMS, name
        key = _labels_key(labels)
        for bound in HISTOGRAMS[name][1]:
            if value <= bound:
                increments[PREFIX + name, f"{key}|{bound}"] += 1
        increments[PREFIX + name, f"{key}|count"] += 1
        sums[PREFIX + name, f"{key}|sum"] += value
    if not increments:
        return
    try:
        with redis_connection().pipeline(transaction=False) as pipeline:
            for (hash_key, field), amount in increments.items():
                pipeline.hincrby(hash_key, field, amount)
            for (hash_key, field), total in sums.items():
                pipeline.hincrbyfloat(hash_key, field, total)
            pipeline.execute()
    except (RedisError, OSError) as error:
        _warn(error)


class PaydeskCollector(Collector):
    """Reads the current state at scrape time; apps add gauges with `register_gauges`."""

    def collect(self) -> Iterable:
        yield from self._jobs()
        yield from self._queues()
        for source in _gauge_sources:
            yield from source()
        try:
            yield from self._from_redis()
        except (RedisError, OSError) as error:
            logger.warning("metrics: Redis unavailable: %s", error)

    def _jobs(self):
        jobs = GaugeMetricFamily(
            "paydesk_jobs",
            "Jobs in the ledger by queue and status (succeeded and canceled ones are not counted).",
            labels=["queue", "status"],
        )
        live = [JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.RETRYING, JobStatus.FAILED]
        rows = Job.objects.filter(status__in=live).values("queue", "status").annotate(n=Count("pk")).order_by()
        for row in rows:
            jobs.add_metric([row["queue"], row["status"]], row["n"])
        yield jobs

    def _queues(self):
        depth = GaugeMetricFamily("paydesk_queue_depth", "Jobs waiting in Redis per queue.", labels=["queue"])
        oldest = GaugeMetricFamily(
            "paydesk_queue_oldest_job_age_seconds",
            "How long the oldest due job of the queue (pending, queued or retrying) has waited; 0 when none.",
            labels=["queue"],
        )
        waiting = GaugeMetricFamily(
            "paydesk_queue_waiting_jobs", "Due jobs of the ledger not yet running, per queue.", labels=["queue"]
        )
        for queue in queue_health():
            if queue.depth is not None:
                depth.add_metric([queue.name], queue.depth)
            oldest.add_metric([queue.name], queue.oldest_seconds or 0.0)
            waiting.add_metric([queue.name], queue.waiting)
        yield from (depth, oldest, waiting)
        alive = GaugeMetricFamily("paydesk_workers", "RQ workers registered in Redis (alive).")
        sweep = GaugeMetricFamily(
            "paydesk_sweeper_last_run_age_seconds", "Seconds since the sweeper last ran (absent: never ran)."
        )
        try:
            alive.add_metric([], len(workers()))
            swept_at = last_sweep_at()
        except RedisUnavailable:
            return
        yield alive
        if swept_at is not None:
            sweep.add_metric([], (timezone.now() - swept_at).total_seconds())
            yield sweep

    def _from_redis(self):
        connection = redis_connection()
        with connection.pipeline(transaction=False) as pipeline:
            for name in [*COUNTERS, *HISTOGRAMS]:
                pipeline.hgetall(PREFIX + name)
            values = dict(zip([*COUNTERS, *HISTOGRAMS], pipeline.execute(), strict=True))
        for name, (help_text,) in COUNTERS.items():
            rows = [(json.loads(key), int(value)) for key, value in values[name].items()]
            names = _label_names(labels for labels, _ in rows)
            family = CounterMetricFamily(f"paydesk_{name}", help_text, labels=names)
            for labels, value in rows:
                family.add_metric([labels.get(label, "") for label in names], value)
            yield family
        for name, (help_text, buckets) in HISTOGRAMS.items():
            series: dict[str, dict[str, float]] = {}
            for field, value in values[name].items():
                key, part = field.decode().rsplit("|", 1)
                series.setdefault(key, {})[part] = float(value)
            label_sets = {key: json.loads(key) for key in series}
            names = _label_names(label_sets.values())
            family = HistogramMetricFamily(f"paydesk_{name}", help_text, labels=names)
            for key, parts in series.items():
                family.add_metric(
                    [label_sets[key].get(label, "") for label in names],
                    [(str(bound), parts.get(str(bound), 0.0)) for bound in buckets]
                    + [("+Inf", parts.get("count", 0.0))],
                    parts.get("sum", 0.0),
                )
            yield family


def _label_names(label_sets) -> list[str]:
    names: set[str] = set()
    for labels in label_sets:
        names.update(labels)
    return sorted(names)


_gauge_sources: list = []


def register_gauges(source) -> None:
    """Add a function yielding prometheus metric families, read at each scrape."""
    if source not in _gauge_sources:
        _gauge_sources.append(source)


def metrics_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PaydeskCollector())
    return registry


def metrics_token() -> str:
    return settings.PAYDESK_METRICS_TOKEN
