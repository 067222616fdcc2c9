"""The demo's pieces: simulated troubles that need a person, the traffic generator, the
development webhook receiver, e-mails as one line, the banner."""

import json
import logging

import pytest
from django.core import mail
from django.core.management import call_command
from django.test import override_settings

from backoffice.management.commands.demo_banner import banner
from backoffice.models import Job, JobStatus
from backoffice.runner import run_job
from backoffice.services import job_requeue
from notifications.dev_receiver import RECEIVED_KEY
from notifications.models import WebhookEndpoint
from notifications.signing import signature_headers
from payments.jobs import process_payment, recover_payment
from payments.models import Payment
from payments.states import PaymentStatus
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_unreachable_token_stays_unknown_through_every_lookup_then_needs_review(make_payment, settings):
    settings.PAYMENTS_RECOVERY_SCHEDULE_SECONDS = [0.0, 0.0]
    payment = make_payment(payment_method="tok_unreachable")
    process_payment(payment.pk)
    for _ in settings.PAYMENTS_RECOVERY_SCHEDULE_SECONDS:
        recover_payment(payment.pk)

    payment.refresh_from_db()
    assert payment.status == PaymentStatus.UNKNOWN
    assert payment.needs_review


def test_crash_token_fails_its_job_for_real_and_a_requeue_then_charges_once(make_payment, operator, settings):
    settings.PAYMENTS_SIMULATED_CRASHES = 2
    payment = make_payment(payment_method="tok_crash")
    job = Job.objects.get(object_id=str(payment.pk))
    Job.objects.filter(pk=job.pk).update(max_attempts=2)

    for _ in range(2):
        Job.objects.filter(pk=job.pk).update(run_at=job.run_at)
        run_job(str(job.pk))
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert "simulated processor client crash 2 of 2" in job.last_error

    job_requeue(job=job, actor=operator, reason="processor client fixed")
    run_job(str(job.pk))

    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.attempts.count() == 1  # the same attempt, under the same key


def test_traffic_generator_makes_payments_of_several_kinds(db, settings):
    settings.DEBUG = True
    from payments.management.commands.seed_demo import MERCHANTS
    from payments.models import Merchant

    for name, slug, email, _ in MERCHANTS:
        Merchant.objects.create(name=name, slug=slug, contact_email=email)
    UserFactory(username="finance", roles=["Finance"])
    UserFactory(username="operator", roles=["Operators"])

    call_command("demo_traffic", "--interval", "0", "--count", "40", "--seed", "3")

    assert Payment.objects.count() == 40
    assert len(set(Payment.objects.values_list("payment_method", flat=True))) >= 4


def test_traffic_generator_refuses_to_run_in_production(settings):
    from django.core.management.base import CommandError

    settings.DEBUG = False
    with pytest.raises(CommandError, match="development"):
        call_command("demo_traffic", "--count", "1")


@pytest.fixture
def dev_urls(settings):
    settings.DEBUG = True


def signed_post(client, endpoint, body: str, secret: str | None = None):
    from django.utils import timezone

    headers = signature_headers(
        message_id="evt_test1", body=body, signing_secrets=[secret or endpoint.secret], at=timezone.now()
    )
    return client.post(
        "/dev/webhooks/shop/",
        data=body,
        content_type="application/json",
        headers=headers,
        HTTP_HOST="127.0.0.1:8000",
    )


def test_dev_receiver_verifies_signatures_and_lists_what_arrived(client, dev_urls, merchant, settings):
    from backoffice.health import redis_connection

    settings.WEBHOOKS_ALLOW_LOOPBACK = True
    merchant.slug = "shop"
    merchant.save()
    endpoint = WebhookEndpoint.objects.create(merchant=merchant, url="http://127.0.0.1:8000/dev/webhooks/shop/")
    body = json.dumps({"type": "payment.succeeded", "data": {}})

    good = signed_post(client, endpoint, body)
    forged = signed_post(client, endpoint, body, secret="whsec_" + "A" * 43 + "=")

    assert good.status_code == 200
    assert forged.status_code == 400
    entries = [json.loads(raw) for raw in redis_connection().lrange(RECEIVED_KEY, 0, -1)]
    assert [entry["verified"] for entry in entries] == [False, True]
    assert entries[1]["event_type"] == "payment.succeeded"

    client.force_login(UserFactory(username="someone", roles=["Viewers"]))
    page = client.get("/dev/webhooks/", HTTP_HOST="127.0.0.1:8000")
    assert page.status_code == 200
    assert b"NOT verified" in page.content and b"evt_test1" in page.content


def test_there_is_no_dev_receiver_without_debug(client, admin_client, settings):
    settings.DEBUG = False
    assert admin_client.get("/dev/webhooks/").status_code == 404
    assert client.post("/dev/webhooks/shop/", data="{}", content_type="application/json").status_code == 404


def test_emails_on_a_laptop_are_files_and_one_log_line(tmp_path, caplog):
    with override_settings(EMAIL_BACKEND="backoffice.mail.SummaryFileBackend", EMAIL_FILE_PATH=str(tmp_path)):
        with caplog.at_level(logging.INFO, logger="backoffice.mail"):
            mail.send_mail("Payment pay_x succeeded", "long body " * 200, "from@x.example", ["to@y.example"])

    assert [record.getMessage() for record in caplog.records] == [
        f"e-mail to to@y.example: Payment pay_x succeeded (saved in {tmp_path})"
    ]
    assert "long body" in next(tmp_path.iterdir()).read_text()


def test_banner_names_the_urls_and_the_logins(settings, tmp_path):
    settings.RUN_DIR = tmp_path
    (tmp_path / "demo-logins.txt").write_text("  operator      secret-pw          Operators\n")

    text = banner("http://127.0.0.1:8000")

    assert "http://127.0.0.1:8000/admin/" in text and "http://127.0.0.1:8000/merchant/" in text
    assert "operator      secret-pw" in text


class RecordingProcessor:
    """Stands in for the processor service: answers every call as declined, remembering it."""

    calls: list = []

    def charge(self, request):
        from payments.gateways.base import ChargeResult, GatewayOutcome

        self.calls.append(("charge", request.payment_method))
        return ChargeResult(outcome=GatewayOutcome.DECLINED, error_code="card_declined")

    def lookup(self, idempotency_key):
        from payments.gateways.base import GatewayOutcome, LookupResult

        self.calls.append(("lookup", idempotency_key))
        return LookupResult(outcome=GatewayOutcome.NOT_FOUND)


def test_demo_gateway_answers_its_tokens_itself_and_sends_the_rest_to_the_processor(settings, make_payment):
    from payments.gateways.demo import DemoGateway

    settings.PAYMENTS_DEMO_INNER_GATEWAY = "tests.backoffice.test_demo.RecordingProcessor"
    settings.PAYMENTS_GATEWAY = "payments.gateways.demo.DemoGateway"
    RecordingProcessor.calls.clear()
    from payments.gateways import _load

    _load.cache_clear()
    try:
        unreachable = make_payment(payment_method="tok_unreachable")
        ordinary = make_payment(payment_method="tok_success")
        process_payment(unreachable.pk)
        process_payment(ordinary.pk)
        recover_payment(unreachable.pk)
    finally:
        _load.cache_clear()

    assert RecordingProcessor.calls == [("charge", "tok_success")]
    unreachable.refresh_from_db()
    assert unreachable.status == PaymentStatus.UNKNOWN
    assert Payment.objects.get(pk=ordinary.pk).status == PaymentStatus.FAILED
    assert DemoGateway().local.knows(f"{unreachable.public_id}_a1")
