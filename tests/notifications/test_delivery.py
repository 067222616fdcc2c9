"""Delivery to a real HTTP receiver on 127.0.0.1: signatures checked with the standardwebhooks
verifier on the bytes received, failures recorded per try, 410 disabling the endpoint."""

import json
from datetime import timedelta

import pytest
import time_machine
from django.core import mail
from django.utils import timezone
from standardwebhooks import Webhook, WebhookVerificationError
from werkzeug import Response

from backoffice.models import Job
from notifications.delivery import DELIVER_JOB
from notifications.endpoints import (
    webhook_endpoint_create,
    webhook_endpoint_enable,
    webhook_endpoint_rotate_secret,
    webhook_test_send,
)
from notifications.events import EventType
from notifications.models import Channel, Notification, NotificationStatus, WebhookEndpoint
from notifications.transport import RESPONSE_EXCERPT_BYTES
from payments.jobs import process_payment
from tests.helpers import run_due_deliveries


def received(receiver) -> list[tuple[bytes, dict]]:
    return [(request.get_data(), dict(request.headers)) for request, _response in receiver.log]


@pytest.mark.django_db
def test_webhook_is_signed_and_verifies_on_the_bytes_received(endpoint, receiver, make_payment):
    receiver.expect_request("/hooks", method="POST").respond_with_data("thanks", status=200)
    payment = make_payment(merchant_reference="order-77", customer_email="ann@example.com")
    process_payment(payment.pk)

    run_due_deliveries()

    ((body, headers),) = received(receiver)
    payload = Webhook(endpoint.secret).verify(body, headers)
    assert payload["type"] == "payment.succeeded"
    assert payload["data"]["id"] == payment.public_id
    assert payload["data"]["merchant_reference"] == "order-77"
    assert payload["data"]["previous_status"] == "processing"
    assert headers["Webhook-Id"] == payload["id"]
    assert headers["Content-Type"] == "application/json"
    assert b" " not in body  # compact JSON
    # Public fields only: no payment method token, no customer contact, no secrets.
    for private in (b"tok_success", b"ann@example.com", b"whsec_", endpoint.secret.encode()):
        assert private not in body
    notification = Notification.objects.get(channel=Channel.WEBHOOK)
    assert notification.status == NotificationStatus.DELIVERED
    assert notification.body.encode() == body
    attempt = notification.attempts.get()
    assert (attempt.succeeded, attempt.http_status, attempt.response_excerpt) == (True, 200, "thanks")


@pytest.mark.django_db
def test_a_forged_or_tampered_webhook_does_not_verify(endpoint, receiver, operator):
    receiver.expect_request("/hooks", method="POST").respond_with_data("ok")
    webhook_test_send(endpoint=endpoint, actor=operator)
    run_due_deliveries()
    ((body, headers),) = received(receiver)
    with pytest.raises(WebhookVerificationError):
        Webhook(endpoint.secret).verify(body.replace(b"webhook.test", b"payment.succeeded"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(webhook_endpoint_rotate_secret(endpoint=endpoint, actor=operator).secret).verify(
            body, {**headers, "webhook-signature": headers["Webhook-Signature"].split(" ")[0]}
        )


@pytest.mark.django_db
def test_during_a_rotation_both_secrets_sign_and_afterwards_only_the_new_one(endpoint, receiver, operator, settings):
    settings.WEBHOOKS_SECRET_ROTATION_OVERLAP_SECONDS = 3600
    receiver.expect_request("/hooks", method="POST").respond_with_data("ok")
    old_secret = endpoint.secret

    endpoint = webhook_endpoint_rotate_secret(endpoint=endpoint, actor=operator, reason="merchant asked")
    webhook_test_send(endpoint=endpoint, actor=operator)
    run_due_deliveries()

    ((body, headers),) = received(receiver)
    assert len(headers["Webhook-Signature"].split(" ")) == 2
    Webhook(old_secret).verify(body, headers)  # a receiver not yet switched
    Webhook(endpoint.secret).verify(body, headers)  # a receiver already switched

    receiver.clear_log()
    with time_machine.travel(timezone.now() + timedelta(hours=1, seconds=1), tick=False):
        webhook_test_send(endpoint=endpoint, actor=operator)
        run_due_deliveries()
        ((body, headers),) = received(receiver)
        assert len(headers["Webhook-Signature"].split(" ")) == 1
        Webhook(endpoint.secret).verify(body, headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(old_secret).verify(body, headers)


@pytest.mark.django_db
def test_500_is_a_failed_try_with_the_answer_recorded_and_a_retry_scheduled(endpoint, receiver, operator):
    receiver.expect_request("/hooks").respond_with_data("database on fire " * 200, status=500)
    notification = webhook_test_send(endpoint=endpoint, actor=operator)
    before = timezone.now()
    run_due_deliveries()

    notification.refresh_from_db()
    assert notification.status == NotificationStatus.PENDING
    assert notification.last_error == "HTTP 500"
    assert before + timedelta(seconds=4) <= notification.next_attempt_at <= timezone.now() + timedelta(seconds=6)
    attempt = notification.attempts.get()
    assert (attempt.succeeded, attempt.http_status) == (False, 500)
    assert attempt.response_excerpt.startswith("database on fire")
    assert len(attempt.response_excerpt.encode()) <= RESPONSE_EXCERPT_BYTES
    retry = Job.objects.get(func=DELIVER_JOB, kwargs={"notification_id": notification.pk, "attempt_number": 2})
    assert retry.run_at == notification.next_attempt_at
    assert retry.queue == "notifications"


@pytest.mark.django_db
def test_a_receiver_that_hangs_times_out(merchant, operator, hanging_receiver, loopback_allowed, fast_timeout):
    endpoint = webhook_endpoint_create(merchant=merchant, url=hanging_receiver)
    notification = webhook_test_send(endpoint=endpoint, actor=operator)
    run_due_deliveries()

    attempt = notification.attempts.get()
    assert attempt.succeeded is False and attempt.http_status is None
    assert attempt.error == "timed out after 0.5 s"
    assert 400 <= attempt.duration_ms < 3000
    notification.refresh_from_db()
    assert notification.status == NotificationStatus.PENDING


@pytest.mark.django_db
def test_a_redirect_to_a_private_address_is_not_followed(endpoint, receiver, operator, network_guard):
    receiver.expect_request("/hooks").respond_with_response(
        Response("moved", status=302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
    )
    notification = webhook_test_send(endpoint=endpoint, actor=operator)
    run_due_deliveries()

    attempt = notification.attempts.get()
    assert (attempt.succeeded, attempt.http_status) == (False, 302)
    assert "redirect not followed" in attempt.error
    assert len(receiver.log) == 1
    assert network_guard == []
    notification.refresh_from_db()
    assert notification.status == NotificationStatus.PENDING


@pytest.mark.django_db
def test_410_gone_disables_the_endpoint_stops_its_queue_and_emails_the_merchant(endpoint, receiver, operator, merchant):
    receiver.expect_request("/hooks").respond_with_data("gone", status=410)
    first = webhook_test_send(endpoint=endpoint, actor=operator)
    queued_behind = webhook_test_send(endpoint=endpoint, actor=operator)
    Job.objects.filter(kwargs__notification_id=queued_behind.pk).update(run_at=timezone.now() + timedelta(minutes=1))

    run_due_deliveries()

    endpoint.refresh_from_db()
    assert endpoint.enabled is False and endpoint.disabled_at is not None
    assert "410 Gone" in endpoint.disabled_reason
    first.refresh_from_db()
    queued_behind.refresh_from_db()
    assert first.status == NotificationStatus.DISABLED
    assert queued_behind.status == NotificationStatus.DISABLED
    email = Notification.objects.get(event_type=EventType.WEBHOOK_ENDPOINT_DISABLED)
    assert (email.channel, email.destination, email.status) == (
        Channel.EMAIL,
        merchant.contact_email,
        NotificationStatus.DELIVERED,
    )
    (message,) = mail.outbox
    assert message.to == [merchant.contact_email]
    assert endpoint.url in message.body and "410 Gone" in message.body
    ((html, mimetype),) = message.alternatives
    assert mimetype == "text/html" and "410 Gone" in html
    assert endpoint.secret not in message.body + html

    # Its later job finds it disabled and sends nothing; a new event skips the endpoint.
    with time_machine.travel(timezone.now() + timedelta(minutes=2), tick=False):
        assert run_due_deliveries() == [{"skipped": "nothing to deliver"}]
    assert len(receiver.log) == 1


@pytest.mark.django_db
def test_a_re_enabled_endpoint_receives_again(endpoint, receiver, operator):
    receiver.expect_oneshot_request("/hooks").respond_with_data("gone", status=410)
    receiver.expect_request("/hooks").respond_with_data("ok")
    webhook_test_send(endpoint=endpoint, actor=operator)
    run_due_deliveries()
    endpoint.refresh_from_db()
    assert not endpoint.enabled

    webhook_endpoint_enable(endpoint=endpoint, actor=operator, reason="merchant restored it")
    notification = webhook_test_send(endpoint=endpoint, actor=operator)
    run_due_deliveries()
    notification.refresh_from_db()
    assert notification.status == NotificationStatus.DELIVERED
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).enabled


@pytest.mark.django_db
def test_payment_emails_have_text_and_html_bodies(merchant, make_payment):
    payment = make_payment(amount_minor=123456, currency="EUR", merchant_reference="order-9")
    process_payment(payment.pk)
    run_due_deliveries()

    (message,) = mail.outbox
    assert message.to == [merchant.contact_email]
    assert message.subject == f"[Paydesk] Payment {payment.public_id} succeeded"
    assert "1,234.56 EUR" in message.body and "order-9" in message.body
    ((html, mimetype),) = message.alternatives
    assert mimetype == "text/html" and "1,234.56 EUR" in html
    notification = Notification.objects.get(channel=Channel.EMAIL)
    assert message.extra_headers["X-Paydesk-Event-Id"] == notification.event_id
    assert notification.status == NotificationStatus.DELIVERED
    assert json.loads(notification.body)["data"]["id"] == payment.public_id


@pytest.mark.django_db
def test_a_second_rotation_during_the_overlap_is_refused_and_keeps_both_secrets(endpoint, operator):
    from django.core.exceptions import ValidationError

    from notifications.endpoints import webhook_endpoint_rotate_secret

    first = endpoint.secret
    rotated = webhook_endpoint_rotate_secret(endpoint=endpoint, actor=operator, reason="leaked")
    with pytest.raises(ValidationError, match="still in its overlap"):
        webhook_endpoint_rotate_secret(endpoint=rotated, actor=operator, reason="again")
    rotated.refresh_from_db()
    assert rotated.previous_secret == first and rotated.secret != first
