"""Backoffice's cards on the admin's home page: what needs a person (gathered from every app),
queue health, and job throughput."""

from datetime import timedelta

import pygal
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from backoffice.charts import new_chart, register_chart
from backoffice.dashboard import attention_for, attention_item, register_attention, register_card
from backoffice.figures import JOB_SERIES, figures_read, hour_start
from backoffice.health import RedisUnavailable, last_sweep_at, queue_health, sweep_overdue_after_seconds, workers
from backoffice.models import Job, JobStatus
from backoffice.services import QUEUES


def needs_person_context(request) -> dict | None:
    return {"items": attention_for(request)}


def failed_jobs_attention(request) -> list:
    if not request.user.has_perm("backoffice.requeue_job"):
        return []
    url = reverse("admin:backoffice_job_changelist") + "?status__exact=failed"
    item = attention_item("Failed jobs", Job.objects.filter(status=JobStatus.FAILED), url, severity="error")
    return [item] if item else []


def queue_health_context(request) -> dict | None:
    if not request.user.has_perm("backoffice.view_job"):
        return None
    now = timezone.now()
    try:
        alive = workers()
        swept_at = last_sweep_at()
        redis_error = ""
    except RedisUnavailable as error:
        alive, swept_at, redis_error = [], None, str(error)
    sweep_age = (now - swept_at).total_seconds() if swept_at else None
    jobs_url = reverse("admin:backoffice_job_changelist")
    return {
        "queues": queue_health(),
        "jobs_url": jobs_url,
        "workers": alive,
        "redis_error": redis_error,
        "sweep_age": sweep_age,
        "sweep_overdue": sweep_age is None or sweep_age > sweep_overdue_after_seconds(),
        "sweep_interval": settings.JOBS_SWEEP_INTERVAL_SECONDS,
    }


def job_throughput_chart(request) -> pygal.graph.graph.Graph | None:
    if not request.user.has_perm("backoffice.view_job"):
        return None
    hours = [hour_start() - timedelta(hours=back) for back in range(23, -1, -1)]
    table = figures_read(JOB_SERIES, since=hours[0])
    chart = new_chart(pygal.StackedBar, title="Jobs finished per hour (24 h)", x_label_rotation=0)
    chart.x_labels = [f"{timezone.localtime(hour):%H}h" for hour in hours]
    chart.x_labels_major = chart.x_labels[::3]
    for series, label in (("jobs_succeeded", "succeeded"), ("jobs_failed", "failed")):
        chart.add(label, [sum(table[series].get(hour, {}).get(queue, 0) for queue in QUEUES) for hour in hours])
    return chart


def register() -> None:
    register_card(
        name="backoffice.needs_person",
        template="backoffice/dashboard/needs_person.html",
        context=needs_person_context,
        order=10,
    )
    register_card(
        name="backoffice.queues",
        template="backoffice/dashboard/queues.html",
        context=queue_health_context,
        order=50,
    )
    register_attention(failed_jobs_attention)
    register_chart("jobs", job_throughput_chart)
