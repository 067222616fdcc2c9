"""Refund outcomes reach the merchant's webhooks as refund.succeeded / refund.failed."""

import json

import pytest

from backoffice.models import Job, JobStatus
from backoffice.runner import run_job
from notifications.models import Notification
from payments import services
from payments.jobs import process_payment
from payments.models import new_request_key
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("amount", "event_type", "failure_code"),
    [(40_00, "refund.succeeded", ""), (40_13, "refund.failed", "refund_declined")],
)
def test_refund_outcome_is_sent_to_webhooks_only(make_payment, endpoint, amount, event_type, failure_code):
    payment = make_payment(amount_minor=100_00)
    process_payment(payment.pk)
    finance = UserFactory(username="refunder", roles=["Finance"])
    refund = services.refund_request(
        payment=payment,
        amount_minor=amount,
        reason="returned",
        requested_by=finance,
        request_key=new_request_key("test"),
    )[0]
    for job in Job.objects.filter(func=services.REFUND_JOB, status=JobStatus.PENDING):
        run_job(str(job.pk))
    sent = Notification.objects.get(event_type=event_type)
    assert sent.channel == "webhook" and sent.refund == refund and sent.payment == payment
    body = json.loads(sent.body)
    assert body["data"] == {
        "object": "refund",
        "id": refund.public_id,
        "payment": payment.public_id,
        "status": event_type.split(".")[1],
        "amount_minor": amount,
        "currency": "EUR",
        "failure_code": failure_code,
        "created_at": body["data"]["created_at"],
    }
    assert "returned" not in sent.body and "refunder" not in sent.body  # staff notes stay inside
    assert not Notification.objects.filter(event_type=event_type, channel="email").exists()
