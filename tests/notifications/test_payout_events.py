"""Payout changes reach the merchant's webhooks as payout.created / in_transit / paid / failed."""

import json

import pytest

from backoffice.models import Job, JobStatus
from backoffice.runner import run_job
from ledger import services as ledger_services
from ledger.roles import ensure_ledger_roles
from notifications.models import Notification
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("outcome", ["paid", "failed"])
def test_a_payouts_life_is_sent_to_webhooks(merchant, endpoint, outcome):
    ledger_services.adjustment_post(
        merchant=merchant, currency="EUR", amount_minor=250_00, reason="r", idempotency_key="seed"
    )
    [payout] = ledger_services.payouts_run_daily()
    for job in Job.objects.filter(func=ledger_services.SEND_PAYOUT_JOB, status=JobStatus.PENDING):
        run_job(str(job.pk))
    finance = UserFactory(username="payer", roles=["Finance"])
    ensure_ledger_roles()
    if outcome == "paid":
        ledger_services.payout_mark_paid(payout=payout, actor=finance, bank_reference="SEPA-9")
    else:
        ledger_services.payout_mark_failed(payout=payout, actor=finance, reason="account closed")
    sent = Notification.objects.filter(payout=payout).order_by("id")
    assert [n.event_type for n in sent] == ["payout.created", "payout.in_transit", f"payout.{outcome}"]
    assert all(n.channel == "webhook" and n.endpoint == endpoint for n in sent)
    data = json.loads(sent.last().body)["data"]
    assert data["object"] == "payout" and data["id"] == payout.public_id and data["amount_minor"] == 250_00
    assert data["status"] == outcome and "requested_by" not in data


def test_an_endpoint_can_subscribe_to_payout_events_only(merchant, endpoint):
    endpoint.event_types = ["payout.paid"]
    endpoint.full_clean()
    endpoint.save()
    ledger_services.adjustment_post(
        merchant=merchant, currency="EUR", amount_minor=1_00, reason="r", idempotency_key="s"
    )
    ledger_services.payouts_run_daily()
    assert not Notification.objects.exists()
