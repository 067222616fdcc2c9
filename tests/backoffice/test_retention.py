"""Bounded growth (backoffice.retention): what is past its horizon goes, in batches, by the
sweeper process's periodic pass or `manage.py prune_retention`; payments, events, audit
entries and the ledger never do."""

from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from backoffice.models import AuditEntry, Job, JobStatus
from backoffice.periodic import registered_periodic
from backoffice.retention import retention_apply
from backoffice.services import audit_record
from notifications.models import DeliveryAttempt, Notification, NotificationStatus, WebhookEndpoint
from payments.models import Payment, PaymentEvent
from tests.backoffice.test_settings import manage
from tests.helpers import make_job

pytestmark = pytest.mark.django_db


def _old(days: int):
    return timezone.now() - timedelta(days=days)


def _finished_job(status: str, days_ago: int) -> Job:
    job = make_job(status=status)
    Job.objects.filter(pk=job.pk).update(finished_at=_old(days_ago))
    return job


def _notification(endpoint, status: str, days_ago: int, **fields) -> Notification:
    notification = Notification.objects.create(
        event_id=f"evt_{Notification.objects.count()}",
        event_type="payment.succeeded",
        merchant=endpoint.merchant,
        channel="webhook",
        endpoint=endpoint,
        destination=endpoint.url,
        body="{}",
        status=status,
        **fields,
    )
    Notification.objects.filter(pk=notification.pk).update(created_at=_old(days_ago))
    DeliveryAttempt.objects.create(
        notification=notification, number=1, destination=endpoint.url, started_at=_old(days_ago), succeeded=True
    )
    return notification


@pytest.fixture
def endpoint(merchant):
    return WebhookEndpoint.objects.create(merchant=merchant, url="https://hooks.merchant.example/hooks")


def test_succeeded_jobs_go_after_their_horizon_and_every_other_job_stays(settings):
    settings.RETENTION_SUCCEEDED_JOBS_DAYS = 30
    old_succeeded = [_finished_job(JobStatus.SUCCEEDED, 31) for _ in range(5)]
    kept = [
        _finished_job(JobStatus.SUCCEEDED, 29),
        _finished_job(JobStatus.FAILED, 300),  # a person may still requeue it
        _finished_job(JobStatus.CANCELED, 300),
        make_job(status=JobStatus.PENDING),
    ]

    done = retention_apply(batch_size=2)  # three batches

    assert done["backoffice.succeeded_jobs"] == 5
    assert not Job.objects.filter(pk__in=[job.pk for job in old_succeeded]).exists()
    assert set(Job.objects.values_list("pk", flat=True)) == {job.pk for job in kept}


def test_delivered_notifications_go_with_their_attempts_and_the_rest_stays(settings, endpoint):
    settings.RETENTION_DELIVERED_NOTIFICATIONS_DAYS = 90
    old_delivered = _notification(endpoint, NotificationStatus.DELIVERED, 91)
    recent = _notification(endpoint, NotificationStatus.DELIVERED, 10)
    old_failed = _notification(endpoint, NotificationStatus.FAILED, 200)  # a person may resend it
    resent_original = _notification(endpoint, NotificationStatus.DELIVERED, 200)
    resend = _notification(endpoint, NotificationStatus.DELIVERED, 5, resend_of=resent_original)

    done = retention_apply()

    assert done["notifications.delivered"] == 2  # the notification and its attempt
    assert not Notification.objects.filter(pk=old_delivered.pk).exists()
    assert not DeliveryAttempt.objects.filter(notification_id=old_delivered.pk).exists()
    assert set(Notification.objects.values_list("pk", flat=True)) == {
        recent.pk,
        old_failed.pk,
        resent_original.pk,
        resend.pk,
    }


def test_expired_sessions_go_like_clearsessions(admin_user):
    live = SessionStore()
    live.create()
    expired = SessionStore()
    expired.create()
    Session.objects.filter(session_key=expired.session_key).update(expire_date=_old(1))

    retention_apply()

    assert list(Session.objects.values_list("session_key", flat=True)) == [live.session_key]


def test_payments_events_and_audit_entries_are_never_pruned(settings, make_payment, admin_user):
    settings.RETENTION_SUCCEEDED_JOBS_DAYS = 1
    payment = make_payment()
    audit_record(actor=admin_user, action="payment_retry", target=payment, reason="test")
    for model in (Payment, PaymentEvent, AuditEntry):
        model.objects.update(created_at=_old(3650))

    retention_apply()

    assert Payment.objects.filter(pk=payment.pk).exists()
    assert PaymentEvent.objects.filter(payment=payment).exists() and AuditEntry.objects.exists()


def test_a_pass_stops_when_its_time_is_spent(settings):
    settings.RETENTION_SUCCEEDED_JOBS_DAYS = 1
    for _ in range(3):
        _finished_job(JobStatus.SUCCEEDED, 2)

    assert retention_apply(budget_seconds=0)["backoffice.succeeded_jobs"] == 0
    assert Job.objects.count() == 3


def test_the_sweeper_process_runs_retention_on_its_interval(settings):
    periodic = {item.name: item for item in registered_periodic()}
    assert periodic["retention"].interval_seconds == settings.RETENTION_INTERVAL_SECONDS


def test_prune_retention_command_reports_and_dry_run_deletes_nothing(settings):
    settings.RETENTION_SUCCEEDED_JOBS_DAYS = 30
    job = _finished_job(JobStatus.SUCCEEDED, 31)

    out = StringIO()
    call_command("prune_retention", "--dry-run", stdout=out)
    assert "backoffice.succeeded_jobs: 1 rows due" in out.getvalue()
    assert Job.objects.filter(pk=job.pk).exists()

    out = StringIO()
    call_command("prune_retention", stdout=out)
    assert "backoffice.succeeded_jobs: 1 rows deleted" in out.getvalue()
    assert not Job.objects.filter(pk=job.pk).exists()


@pytest.mark.parametrize(
    "env,message",
    [
        ({"RETENTION_SUCCEEDED_JOBS_DAYS": "0"}, "RETENTION_SUCCEEDED_JOBS_DAYS must be greater than zero"),
        ({"RETENTION_BATCH_SIZE": "-5"}, "RETENTION_BATCH_SIZE must be greater than zero"),
        ({"RETENTION_DELIVERED_NOTIFICATIONS_DAYS": "1"}, "must outlast WEBHOOKS_RETRY_SCHEDULE_SECONDS"),
        ({"RETENTION_PASS_SECONDS": "700"}, "RETENTION_PASS_SECONDS (700.0) must be shorter"),
        ({"RETENTION_SUCCEEDED_JOBS_DAYS": "soon"}, "RETENTION_SUCCEEDED_JOBS_DAYS"),
    ],
)
def test_retention_settings_are_checked_at_start_up(env, message):
    result = manage("check", DJANGO_DEBUG="true", **env)
    assert result.returncode != 0
    assert message in result.stderr


def test_the_sweepers_index_holds_only_rows_it_may_move():
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'job_status_run_at'")
        (definition,) = cursor.fetchone()
    assert "WHERE" in definition and "'succeeded'" not in definition and "'pending'" in definition
