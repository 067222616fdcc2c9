"""Payment status changes create notifications and their jobs inside the change's transaction."""

import django_rq
import pytest
from django.db import transaction

from backoffice.models import Job, JobStatus
from notifications.delivery import DELIVER_JOB
from notifications.endpoints import webhook_endpoint_create
from notifications.models import Channel, Notification, NotificationStatus
from payments.jobs import process_payment
from payments.services import payment_cancel
from payments.signals import payment_status_changed
from tests.factories import MerchantFactory


@pytest.mark.django_db
def test_a_succeeded_payment_notifies_each_interested_endpoint_and_emails_the_merchant(
    merchant, make_payment, public_dns
):
    everything = webhook_endpoint_create(merchant=merchant, url="https://hooks.merchant.example/all")
    successes = webhook_endpoint_create(
        merchant=merchant, url="https://hooks.merchant.example/ok", event_types=["payment.succeeded"]
    )
    webhook_endpoint_create(
        merchant=merchant, url="https://hooks.merchant.example/failures", event_types=["payment.failed"]
    )
    webhook_endpoint_create(merchant=MerchantFactory(), url="https://hooks.merchant.example/someone-else")
    payment = make_payment()
    assert not Notification.objects.exists()  # created (pending): nothing to tell yet

    process_payment(payment.pk)

    notifications = list(Notification.objects.order_by("channel", "endpoint_id"))
    assert [(n.channel, n.endpoint) for n in notifications] == [
        (Channel.EMAIL, None),
        (Channel.WEBHOOK, everything),
        (Channel.WEBHOOK, successes),
    ]
    assert len({n.event_id for n in notifications}) == 1
    event = payment.events.get(to_status="succeeded")
    for notification in notifications:
        assert (notification.payment, notification.payment_event, notification.merchant) == (payment, event, merchant)
        assert notification.event_type == "payment.succeeded"
        assert notification.status == NotificationStatus.PENDING and notification.attempt_count == 0
        job = Job.objects.get(func=DELIVER_JOB, kwargs={"notification_id": notification.pk, "attempt_number": 1})
        assert job.queue == "notifications" and job.concerns == notification


@pytest.mark.django_db
def test_disabled_endpoints_get_nothing_and_canceled_payments_are_not_emailed(merchant, make_payment, public_dns):
    endpoint = webhook_endpoint_create(merchant=merchant, url="https://hooks.merchant.example/all")
    disabled = webhook_endpoint_create(merchant=merchant, url="https://hooks.merchant.example/old")
    disabled.enabled, disabled.disabled_reason = False, "test"
    disabled.disabled_at = disabled.created_at
    disabled.save()
    payment_cancel(payment=make_payment(), actor=None, reason="customer left")
    notification = Notification.objects.get()
    assert (notification.endpoint, notification.event_type) == (endpoint, "payment.canceled")


@pytest.mark.django_db
def test_a_rolled_back_status_change_leaves_no_notification_and_no_job(merchant, make_payment, public_dns):
    webhook_endpoint_create(merchant=merchant, url="https://hooks.merchant.example/all")
    payment = make_payment()
    with pytest.raises(RuntimeError), transaction.atomic():
        payment_cancel(payment=payment, actor=None)
        assert Notification.objects.count() == 1
        raise RuntimeError("something later in the same transaction failed")
    assert not Notification.objects.exists()
    assert not Job.objects.filter(func=DELIVER_JOB).exists()


@pytest.mark.django_db
def test_delivery_jobs_reach_redis_only_after_the_change_commits(
    merchant, make_payment, public_dns, django_capture_on_commit_callbacks
):
    webhook_endpoint_create(merchant=merchant, url="https://hooks.merchant.example/all")
    payment = make_payment()
    queue = django_rq.get_queue("notifications")
    with django_capture_on_commit_callbacks(execute=True):
        payment_cancel(payment=payment, actor=None)
        assert queue.count == 0
    job = Job.objects.get(func=DELIVER_JOB)
    assert queue.job_ids == [str(job.pk)]
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED


def test_the_receiver_is_connected_once():
    from notifications.receivers import connect_receivers

    connect_receivers()  # ready() already did: a second call changes nothing
    keys = [entry[0] for entry in payment_status_changed.receivers]
    assert [key[0] for key in keys].count("notifications.payment_status_changed") == 1
