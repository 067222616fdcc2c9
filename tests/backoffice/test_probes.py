"""/healthz, /readyz, /metrics and the structured logs."""

import io
import json
import logging

import pytest
import redis
from rq import Worker

from backoffice import health
from backoffice.health import sweep_recorded
from backoffice.logs import ForbiddenWithoutTraceback, structured_logging
from backoffice.models import Job
from backoffice.runner import run_job
from backoffice.services import job_enqueue
from notifications.jobs import deliver_notification
from payments.jobs import process_payment

pytestmark = pytest.mark.django_db


@pytest.fixture
def live_worker():
    worker = Worker(["payments"], connection=health.redis_connection(), name="probe-test-worker")
    worker.register_birth()
    yield worker
    worker.register_death()


def test_healthz_answers_without_touching_the_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_unavailable_without_a_worker_or_a_sweep_and_says_which(client):
    response = client.get("/readyz")

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"]["ok"] and checks["redis"]["ok"]
    assert not checks["workers"]["ok"] and "no worker" in checks["workers"]["detail"]
    assert not checks["sweeper"]["ok"] and "never ran" in checks["sweeper"]["detail"]
    assert response["Cache-Control"].startswith("max-age=0")


def test_readyz_is_ok_with_a_live_worker_and_a_recent_sweep(client, live_worker):
    sweep_recorded()

    response = client.get("/readyz")

    assert response.status_code == 200, response.json()
    assert "probe-test-worker" in response.json()["checks"]["workers"]["detail"]


def test_readyz_reports_redis_down_without_raising(client, monkeypatch):
    monkeypatch.setattr(health, "redis_connection", lambda: redis.Redis(host="127.0.0.1", port=9, socket_timeout=1))

    response = client.get("/readyz")

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"]["ok"] and not checks["redis"]["ok"]
    assert "9" in checks["redis"]["detail"]


def test_metrics_are_refused_to_other_addresses_without_the_token(client, settings):
    settings.PAYDESK_METRICS_TOKEN = "scrape-secret"
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer scrape-secret").status_code == 200


def test_metrics_without_a_token_configured_need_an_allowed_address(client, settings):
    settings.PAYDESK_METRICS_TOKEN = ""
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer ").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200


def metric_lines(client) -> list[str]:
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return response.content.decode().splitlines()


def test_metrics_count_payments_jobs_durations_and_processor_calls(client, make_payment):
    pending = make_payment()
    failing = make_payment(payment_method="tok_decline")
    job = Job.objects.get(object_id=str(failing.pk))
    run_job(str(job.pk))

    lines = metric_lines(client)

    assert 'paydesk_payments{status="pending"} 1.0' in lines
    assert 'paydesk_payments{status="failed"} 1.0' in lines
    assert 'paydesk_jobs{queue="payments",status="pending"} 1.0' in lines
    # process_payment runs as a batch (payments.batch): each Job counts as a single one would.
    assert 'paydesk_jobs_finished_total{func="process_payment",outcome="succeeded",queue="payments"} 1.0' in lines
    assert 'paydesk_job_duration_seconds_count{func="process_payment",queue="payments"} 1.0' in lines
    assert 'paydesk_processor_call_seconds_count{operation="charge",outcome="declined"} 1.0' in lines
    assert any(line.startswith('paydesk_queue_oldest_job_age_seconds{queue="payments"}') for line in lines)
    assert pending.status == "pending"


def test_metrics_count_failed_job_runs_as_retrying_then_failed(client):
    job = job_enqueue(func="tests.backoffice.test_runner.fail_always", kwargs={"reason": "x"}, max_attempts=1)
    run_job(str(job.pk))

    lines = metric_lines(client)

    assert 'paydesk_jobs_finished_total{func="fail_always",outcome="failed",queue="default"} 1.0' in lines
    assert 'paydesk_jobs{queue="default",status="failed"} 1.0' in lines


def test_metrics_count_webhook_deliveries_by_outcome(client, httpserver, settings, merchant, make_payment):
    from notifications.endpoints import webhook_endpoint_create
    from notifications.models import Notification

    settings.WEBHOOKS_ALLOW_LOOPBACK = True
    httpserver.expect_request("/hook").respond_with_data("", status=500)
    webhook_endpoint_create(merchant=merchant, url=httpserver.url_for("/hook").replace("localhost", "127.0.0.1"))
    process_payment(make_payment().pk)
    notification = Notification.objects.get(channel="webhook")

    deliver_notification(notification.pk, 1)

    assert 'paydesk_webhook_deliveries_total{channel="webhook",outcome="failed"} 1.0' in metric_lines(client)


def test_a_job_log_line_carries_the_job_id_as_json(make_payment):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    config = structured_logging(json_lines=True, level="INFO")
    formatter_config = dict(config["formatters"]["structured"])
    handler.setFormatter(formatter_config.pop("()")(**formatter_config))
    runner_log = logging.getLogger("backoffice.runner")
    runner_log.addHandler(handler)
    try:
        job = job_enqueue(func="tests.backoffice.test_runner.fail_always", kwargs={"reason": "x"}, max_attempts=1)
        run_job(str(job.pk))
    finally:
        runner_log.removeHandler(handler)

    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["job_id"] == str(job.pk)
    assert line["level"] == "warning"
    assert "failed" in line["event"]


def test_forbidden_requests_log_one_line_without_a_traceback():
    try:
        raise PermissionError("nope")
    except PermissionError:
        import sys

        record = logging.LogRecord("django.request", logging.WARNING, "x", 1, "Forbidden: /admin/", (), sys.exc_info())
    record.status_code = 403

    ForbiddenWithoutTraceback().filter(record)

    assert record.exc_info is None
