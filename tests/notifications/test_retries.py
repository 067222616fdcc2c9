"""The multi-day retry schedule (with jitter), one webhook-id across every try, and duplicate
or stale job runs that never send a notification twice."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from backoffice.models import Job
from notifications.delivery import DELIVER_JOB, DeliveryInProgress, notification_delivery_start, notification_resend
from notifications.endpoints import webhook_test_send
from notifications.jobs import deliver_notification
from notifications.models import DeliveryAttempt, Notification, NotificationStatus
from tests.helpers import run_due_deliveries

SCHEDULE = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]


@pytest.mark.django_db
def test_failed_tries_follow_the_schedule_with_jitter_then_fail(endpoint, receiver, operator, settings):
    assert settings.WEBHOOKS_RETRY_SCHEDULE_SECONDS == SCHEDULE  # the schedule is the default
    receiver.expect_request("/hooks").respond_with_data("down for maintenance", status=503)
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        notification = webhook_test_send(endpoint=endpoint, actor=operator)
        run_due_deliveries()
        for try_number, delay in enumerate(SCHEDULE, start=1):
            notification.refresh_from_db()
            assert notification.status == NotificationStatus.PENDING
            assert notification.attempt_count == try_number
            wait = (notification.next_attempt_at - timezone.now()).total_seconds()
            assert delay * 0.8 <= wait <= delay * 1.2, (try_number, wait)
            next_job = Job.objects.get(
                func=DELIVER_JOB, kwargs={"notification_id": notification.pk, "attempt_number": try_number + 1}
            )
            assert next_job.run_at == notification.next_attempt_at

            clock.move_to(notification.next_attempt_at - timedelta(seconds=1))
            assert run_due_deliveries() == []  # not before its time
            clock.move_to(notification.next_attempt_at)
            (result,) = run_due_deliveries()
            assert result["try"] == try_number + 1

    notification.refresh_from_db()
    assert notification.status == NotificationStatus.FAILED
    assert notification.next_attempt_at is None
    assert notification.attempts.count() == len(SCHEDULE) + 1 == len(receiver.log)
    assert not Job.objects.filter(func=DELIVER_JOB, kwargs__attempt_number=len(SCHEDULE) + 2).exists()
    total = notification.attempts.last().started_at - notification.attempts.first().started_at
    # ~27.6 h of trying, each wait within the +-20% jitter (all low gives ~22 h, all high ~33 h)
    assert sum(SCHEDULE) * 0.8 <= total.total_seconds() <= sum(SCHEDULE) * 1.2
    # One message, one webhook-id, on every try.
    assert {request.headers["Webhook-Id"] for request, _ in receiver.log} == {notification.event_id}


@pytest.mark.django_db
def test_jitter_spreads_the_retries_of_a_burst(endpoint, receiver, operator):
    receiver.expect_request("/hooks").respond_with_data("busy", status=500)
    # The clock stands still: without jitter the eight failures would all be retried at one moment.
    with time_machine.travel(timezone.now(), tick=False):
        for _ in range(8):
            webhook_test_send(endpoint=endpoint, actor=operator)
        run_due_deliveries()
    next_times = set(Notification.objects.values_list("next_attempt_at", flat=True))
    assert len(next_times) == 8


@pytest.mark.django_db
def test_a_success_after_failures_stops_the_schedule(endpoint, receiver, operator):
    receiver.expect_oneshot_request("/hooks").respond_with_data("oops", status=500)
    receiver.expect_request("/hooks").respond_with_data("ok")
    notification = webhook_test_send(endpoint=endpoint, actor=operator)
    run_due_deliveries()
    with time_machine.travel(timezone.now() + timedelta(seconds=7), tick=False):
        run_due_deliveries()
    notification.refresh_from_db()
    assert notification.status == NotificationStatus.DELIVERED
    assert [attempt.succeeded for attempt in notification.attempts.all()] == [False, True]
    assert notification.next_attempt_at is None and notification.last_error == ""


# --- duplicate runs ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_duplicate_runs_of_a_delivery_job_never_send_a_delivered_notification_again(endpoint, receiver, operator):
    receiver.expect_request("/hooks").respond_with_data("ok")
    notification = webhook_test_send(endpoint=endpoint, actor=operator)
    job = Job.objects.get(func=DELIVER_JOB, kwargs__notification_id=notification.pk)

    assert deliver_notification(**job.kwargs)["status"] == NotificationStatus.DELIVERED
    for _ in range(3):  # pushed twice, requeued by hand, run by a second worker...
        assert deliver_notification(**job.kwargs) == {"skipped": "nothing to deliver"}
    # ...or a job for any later try, left over from before.
    assert deliver_notification(notification_id=notification.pk, attempt_number=2) == {"skipped": "nothing to deliver"}
    assert len(receiver.log) == 1
    assert DeliveryAttempt.objects.filter(notification=notification).count() == 1


@pytest.mark.django_db
def test_a_duplicate_run_of_an_old_try_does_not_send_again(endpoint, receiver, operator):
    receiver.expect_request("/hooks").respond_with_data("nope", status=500)
    notification = webhook_test_send(endpoint=endpoint, actor=operator)
    run_due_deliveries()
    assert deliver_notification(notification_id=notification.pk, attempt_number=1) == {"skipped": "nothing to deliver"}
    assert len(receiver.log) == 1


@pytest.mark.django_db
def test_a_try_in_flight_elsewhere_is_not_made_twice(endpoint, receiver, operator):
    receiver.expect_request("/hooks").respond_with_data("ok")
    notification = webhook_test_send(endpoint=endpoint, actor=operator)
    attempt = notification_delivery_start(notification_id=notification.pk, attempt_number=1)
    assert attempt is not None

    with pytest.raises(DeliveryInProgress):  # the runner retries this job later
        deliver_notification(notification_id=notification.pk, attempt_number=1)
    assert receiver.log == []


@pytest.mark.django_db
def test_a_try_left_open_by_a_dead_worker_is_closed_and_the_next_one_scheduled_not_resent(endpoint, receiver, operator):
    receiver.expect_request("/hooks").respond_with_data("ok")
    notification = webhook_test_send(endpoint=endpoint, actor=operator)
    Job.objects.filter(func=DELIVER_JOB).update(status="running")  # claimed by a worker...
    notification_delivery_start(notification_id=notification.pk, attempt_number=1)  # ...that then died

    with time_machine.travel(timezone.now() + timedelta(minutes=5), tick=False):
        assert deliver_notification(notification_id=notification.pk, attempt_number=1) == {
            "skipped": "nothing to deliver"
        }
        notification.refresh_from_db()
        assert notification.status == NotificationStatus.PENDING
        first = notification.attempts.get(number=1)
        assert first.succeeded is False and first.error.startswith("interrupted")
        assert receiver.log == []
    with time_machine.travel(notification.next_attempt_at, tick=False):
        (result,) = run_due_deliveries()
    assert result["status"] == NotificationStatus.DELIVERED and result["try"] == 2
    assert len(receiver.log) == 1


@pytest.mark.django_db
def test_resend_is_a_new_delivery_with_the_same_event_id(endpoint, receiver, operator):
    receiver.expect_request("/hooks").respond_with_data("ok")
    original = webhook_test_send(endpoint=endpoint, actor=operator)
    run_due_deliveries()

    resend = notification_resend(notification=original, actor=operator, reason="merchant lost it")
    run_due_deliveries()

    resend.refresh_from_db()
    assert resend.pk != original.pk and resend.resend_of == original
    assert resend.status == NotificationStatus.DELIVERED and resend.body == original.body
    first, second = (request for request, _ in receiver.log)
    assert first.headers["Webhook-Id"] == second.headers["Webhook-Id"] == original.event_id
    assert first.get_data() == second.get_data()


@pytest.mark.django_db
def test_resend_of_a_notification_still_being_delivered_is_refused(endpoint, operator):
    notification = webhook_test_send(endpoint=endpoint, actor=operator)
    with pytest.raises(Exception, match="still being delivered"):
        notification_resend(notification=notification, actor=operator)
    assert Notification.objects.count() == 1
