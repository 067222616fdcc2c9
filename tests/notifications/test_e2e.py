"""A real `rqworker` process takes a payment from pending to a verified webhook at a real
receiver on 127.0.0.1, retrying through the job ledger when the receiver fails first."""

import pytest
from standardwebhooks import Webhook

from backoffice.sweeper import jobs_sweep
from notifications.endpoints import webhook_endpoint_create
from notifications.models import Channel, Notification, NotificationStatus
from tests.helpers import wait_until


@pytest.mark.django_db(transaction=True)
def test_a_worker_delivers_a_signed_webhook_after_a_failed_try(
    merchant, make_payment, receiver, loopback_allowed, start_worker
):
    receiver.expect_oneshot_request("/hooks", method="POST").respond_with_data("try later", status=500)
    receiver.expect_request("/hooks", method="POST").respond_with_data("ok")
    endpoint = webhook_endpoint_create(merchant=merchant, url=receiver.url_for("/hooks"))
    worker = start_worker(
        "payments",
        "notifications",
        "default",
        WEBHOOKS_ALLOW_LOOPBACK="true",
        WEBHOOKS_RETRY_SCHEDULE_SECONDS="0.5,0.5",
    )

    payment = make_payment()

    def webhook_delivered():
        jobs_sweep()  # the cron process's job: push the retry once its run_at has come
        return Notification.objects.filter(channel=Channel.WEBHOOK, status=NotificationStatus.DELIVERED).first()

    notification = wait_until(webhook_delivered, timeout=60, interval=0.2, message=f"delivery\n{worker.output()}")
    assert notification.payment_id == payment.pk
    assert [(a.http_status, a.succeeded) for a in notification.attempts.all()] == [(500, False), (200, True)]
    first, second = (request for request, _ in receiver.log)
    assert first.headers["Webhook-Id"] == second.headers["Webhook-Id"] == notification.event_id
    payload = Webhook(endpoint.secret).verify(second.get_data(), dict(second.headers))
    assert (payload["type"], payload["data"]["id"]) == ("payment.succeeded", payment.public_id)
    wait_until(
        lambda: Notification.objects.filter(channel=Channel.EMAIL, status=NotificationStatus.DELIVERED).exists(),
        timeout=30,
        message="the merchant's e-mail",
    )
