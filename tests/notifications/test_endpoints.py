"""Endpoint services: editing an endpoint (checked like a new one, locked, audited) and who
disabled it, as the merchant reads it."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.db import connection, transaction

from backoffice.models import AuditEntry
from notifications.endpoints import (
    STAFF_DISABLED_REASON,
    webhook_endpoint_create,
    webhook_endpoint_disable,
    webhook_endpoint_update,
    webhook_test_send,
)
from notifications.models import Notification, NotificationStatus, WebhookEndpoint
from notifications.receivers import HOOKS, connect_receivers
from payments.portal.sections import dashboard_attention, payment_page_sections
from tests.factories import UserFactory
from tests.helpers import run_due_deliveries

HOOK_URL = "https://hooks.merchant.example/hooks"


@pytest.fixture(autouse=True)
def more_dns(public_dns):
    public_dns.answer("new-hooks.merchant.example", "93.184.215.15")
    public_dns.answer("intranet.merchant.example", "10.1.2.3")


@pytest.fixture
def public_endpoint(merchant):
    return webhook_endpoint_create(
        merchant=merchant, url=HOOK_URL, event_types=["payment.succeeded"], description="shop"
    )


def endpoint_row(endpoint) -> dict:
    return WebhookEndpoint.objects.filter(pk=endpoint.pk).values().get()


# --- editing ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_update_saves_the_new_values_and_audits_only_what_changed(public_endpoint, operator):
    secret = public_endpoint.secret
    updated = webhook_endpoint_update(
        endpoint=public_endpoint,
        url="https://new-hooks.merchant.example/in",
        event_types=["payment.succeeded", "refund.failed"],
        description="shop",
        actor=operator,
    )
    row = endpoint_row(public_endpoint)
    assert (row["url"], row["event_types"], row["description"]) == (
        "https://new-hooks.merchant.example/in",
        ["payment.succeeded", "refund.failed"],
        "shop",
    )
    assert updated.url == row["url"] and row["secret"] == secret and row["enabled"]
    entry = AuditEntry.objects.get(action="webhook_endpoint_update")
    assert entry.actor == operator and entry.object_id == str(public_endpoint.pk)
    assert entry.details == {
        "changes": {
            "url": [HOOK_URL, "https://new-hooks.merchant.example/in"],
            "event_types": [["payment.succeeded"], ["payment.succeeded", "refund.failed"]],
        }
    }


@pytest.mark.django_db
def test_update_without_a_change_writes_nothing(public_endpoint, operator):
    before = endpoint_row(public_endpoint)
    webhook_endpoint_update(
        endpoint=public_endpoint,
        url=HOOK_URL,
        event_types=["payment.succeeded"],
        description="shop",
        actor=operator,
    )
    assert endpoint_row(public_endpoint) == before
    assert not AuditEntry.objects.filter(action="webhook_endpoint_update").exists()


BAD_EDITS = [
    ({"url": "https://10.0.0.1/hook"}, "url", "a private address"),
    ({"url": "https://0x7f000001/hook"}, "url", "a loopback address"),
    ({"url": "https://169.254.169.254/latest/meta-data"}, "url", "a cloud metadata address"),
    ({"url": "https://intranet.merchant.example/hook"}, "url", "resolves to an address that is"),
    ({"url": "http://hooks.merchant.example/hook"}, "url", "must start with https://"),
    ({"event_types": ["payment.stolen"]}, "event_types", "Unknown event types: payment.stolen"),
]


@pytest.mark.django_db
@pytest.mark.parametrize("change,field,message", BAD_EDITS)
def test_a_refused_update_says_why_on_its_field_and_writes_nothing(public_endpoint, operator, change, field, message):
    before = endpoint_row(public_endpoint)
    edit = {"url": HOOK_URL, "event_types": [], "description": "changed too", **change}
    with pytest.raises(ValidationError) as refused:
        webhook_endpoint_update(endpoint=public_endpoint, actor=operator, **edit)
    assert message in " ".join(refused.value.message_dict[field])
    assert endpoint_row(public_endpoint) == before
    assert not AuditEntry.objects.filter(action="webhook_endpoint_update").exists()


@pytest.mark.django_db
def test_update_checks_the_url_again_even_when_it_is_unchanged(public_endpoint, operator, dns):
    dns.answer("hooks.merchant.example", "192.168.1.20")  # the merchant's DNS now points inside
    with pytest.raises(ValidationError) as refused:
        webhook_endpoint_update(
            endpoint=public_endpoint, url=HOOK_URL, event_types=[], description="new text", actor=operator
        )
    assert "resolves to an address that is" in " ".join(refused.value.message_dict["url"])
    assert endpoint_row(public_endpoint)["description"] == "shop"


@pytest.mark.django_db
def test_pending_tries_go_to_the_new_url(merchant, operator, receiver, loopback_allowed):
    receiver.expect_request("/new").respond_with_data("ok")
    endpoint = webhook_endpoint_create(merchant=merchant, url=receiver.url_for("/old"))
    queued = webhook_test_send(endpoint=endpoint, actor=operator)
    webhook_endpoint_update(
        endpoint=endpoint, url=receiver.url_for("/new"), event_types=[], description="", actor=operator
    )
    run_due_deliveries()
    queued.refresh_from_db()
    assert queued.status == NotificationStatus.DELIVERED
    assert [request.path for request, _response in receiver.log] == ["/new"]
    assert queued.attempts.get().destination == receiver.url_for("/new")


@pytest.mark.django_db(transaction=True)
@pytest.mark.needs_postgres
def test_update_waits_for_the_row_lock_and_records_the_committed_values(public_endpoint, operator):
    locked, release = threading.Event(), threading.Event()

    def staff_edit_holding_the_lock():
        try:
            with transaction.atomic():
                row = WebhookEndpoint.objects.select_for_update().get(pk=public_endpoint.pk)
                locked.set()
                release.wait(10)
                row.description = "staff wrote this"
                row.save(update_fields=["description"])
        finally:
            connection.close()

    holder = threading.Thread(target=staff_edit_holding_the_lock)
    holder.start()
    assert locked.wait(10)
    result: list = []

    def merchant_edit():
        try:
            result.append(
                webhook_endpoint_update(
                    endpoint=public_endpoint,
                    url=HOOK_URL,
                    event_types=["payment.succeeded"],
                    description="merchant wrote this",
                    actor=operator,
                )
            )
        finally:
            connection.close()

    editor = threading.Thread(target=merchant_edit)
    editor.start()
    editor.join(1)
    assert editor.is_alive() and not result  # blocked on the lock
    release.set()
    holder.join(10)
    editor.join(10)
    assert endpoint_row(public_endpoint)["description"] == "merchant wrote this"
    entry = AuditEntry.objects.get(action="webhook_endpoint_update")
    assert entry.details == {"changes": {"description": ["staff wrote this", "merchant wrote this"]}}


# --- who disabled it --------------------------------------------------------------------------


@pytest.mark.django_db
def test_staff_disable_tells_the_merchant_by_email_that_staff_did_it(public_endpoint, operator, merchant):
    webhook_endpoint_disable(endpoint=public_endpoint, actor=operator, reason="fraud review")
    assert endpoint_row(public_endpoint)["disabled_reason"] == STAFF_DISABLED_REASON == "Paydesk staff disabled it"
    run_due_deliveries()
    (message,) = mail.outbox
    assert message.to == [merchant.contact_email] and "because Paydesk staff disabled it" in message.body
    assert AuditEntry.objects.get(action="webhook_endpoint_disable").details["merchant_told"] is True


@pytest.mark.django_db
def test_merchant_disable_names_the_user_and_sends_no_email(public_endpoint, merchant):
    owner = UserFactory(username="olga-owner")
    queued = webhook_test_send(endpoint=public_endpoint, actor=owner)
    webhook_endpoint_disable(endpoint=public_endpoint, actor=owner, reason="in the portal", by_merchant=True)
    row = endpoint_row(public_endpoint)
    assert not row["enabled"] and row["disabled_reason"] == "olga-owner disabled it in the merchant portal"
    assert "staff" not in row["disabled_reason"]
    queued.refresh_from_db()
    assert queued.status == NotificationStatus.DISABLED
    assert queued.last_error == "endpoint disabled: olga-owner disabled it in the merchant portal"
    assert not Notification.objects.filter(event_type="webhook_endpoint.disabled").exists()
    run_due_deliveries()
    assert mail.outbox == []
    entry = AuditEntry.objects.get(action="webhook_endpoint_disable")
    assert (entry.actor, entry.reason, entry.details["merchant_told"]) == (owner, "in the portal", False)


# --- receivers ----------------------------------------------------------------------------------


def test_the_portal_seams_are_hooked_once_by_the_app_not_by_the_urlconf():
    connect_receivers()  # a second call (ready() already ran) connects nothing twice
    for signal in (dashboard_attention, payment_page_sections):
        uids = [lookup_key[0] for lookup_key, *_rest in signal.receivers]
        hooked = [uid for _signal, _receiver, uid in HOOKS if _signal is signal]
        assert len(hooked) == 1 and uids.count(hooked[0]) == 1
    probe = (
        "import sys, django; django.setup();"
        "from payments.portal.sections import dashboard_attention, payment_page_sections;"
        "assert 'notifications.portal.urls' not in sys.modules and 'backoffice.urls' not in sys.modules;"
        "print(dashboard_attention.has_listeners(), payment_page_sections.has_listeners())"
    )
    answer = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
    )
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.split() == ["True", "True"]


# --- one endpoint per URL -----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_second_endpoint_with_the_same_url_is_refused_and_writes_nothing(public_endpoint, merchant, operator):
    with pytest.raises(ValidationError, match="already have an endpoint with this URL"):
        webhook_endpoint_create(merchant=merchant, url=HOOK_URL, actor=operator)
    other = webhook_endpoint_create(merchant=merchant, url="https://new-hooks.merchant.example/hooks")
    with pytest.raises(ValidationError, match="already have an endpoint with this URL"):
        webhook_endpoint_update(endpoint=other, url=HOOK_URL, event_types=[], description="", actor=operator)
    assert WebhookEndpoint.objects.filter(url=HOOK_URL).count() == 1


@pytest.mark.django_db
def test_another_merchant_may_use_the_same_url(public_endpoint):
    from tests.factories import MerchantFactory

    webhook_endpoint_create(merchant=MerchantFactory(), url=HOOK_URL)
    assert WebhookEndpoint.objects.filter(url=HOOK_URL).count() == 2


@pytest.mark.django_db
def test_every_endpoint_of_a_merchant_is_notified_once_and_the_payment_moves_on(merchant, make_payment):
    from payments.jobs import process_payment

    for host in ("hooks", "new-hooks"):
        webhook_endpoint_create(merchant=merchant, url=f"https://{host}.merchant.example/hooks")
    payment = make_payment()
    assert process_payment(payment.pk) == {"status": "succeeded"}
    sent = Notification.objects.filter(payment=payment, event_type="payment.succeeded", channel="webhook")
    assert sent.count() == 2 and sent.values("event_id").distinct().count() == 1
