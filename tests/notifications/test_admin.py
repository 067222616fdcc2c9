"""Admin of endpoints and notifications: permission-gated actions that call services, the
delivery log with its tries, and a payment's notifications on the payment's page."""

from pathlib import Path

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Permission
from django.core import mail
from django.urls import reverse

from backoffice.models import AuditEntry
from notifications.endpoints import webhook_endpoint_change_approve, webhook_endpoint_create, webhook_test_send
from notifications.models import Channel, Notification, NotificationStatus, WebhookEndpoint, WebhookEndpointChange
from payments.jobs import process_payment
from tests.factories import MerchantFactory, UserFactory
from tests.helpers import action_choices, confirm_action, logged_in, messages_of, run_action, run_due_deliveries

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("public_dns")]

ENDPOINTS_URL = "/admin/notifications/webhookendpoint/"
NOTIFICATIONS_URL = "/admin/notifications/notification/"
ENDPOINT_ACTIONS = {"send_test", "rotate_secret", "reenable", "disable"}


@pytest.fixture
def public_endpoint(merchant):
    return webhook_endpoint_create(merchant=merchant, url="https://hooks.merchant.example/hooks")


def test_adding_an_endpoint_with_an_internal_url_shows_why_and_saves_nothing(operator_client, merchant):
    response = operator_client.post(
        f"{ENDPOINTS_URL}add/", {"merchant": merchant.pk, "url": "https://0xa9fea9fe/latest/meta-data/"}
    )
    assert response.status_code == 200
    assert "cloud metadata address" in str(response.context["adminform"].form.errors["url"])
    assert not WebhookEndpoint.objects.exists()


def test_adding_an_endpoint_checks_and_saves_it_with_a_secret_and_an_audit_entry(operator_client, merchant):
    response = operator_client.post(
        f"{ENDPOINTS_URL}add/",
        {"merchant": merchant.pk, "url": "https://hooks.merchant.example/hooks", "event_types": ["payment.failed"]},
    )
    # A staff member's new endpoint is a change for a second person to approve.
    change = WebhookEndpointChange.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:notifications_webhookendpointchange_change", args=[change.pk])
    assert not WebhookEndpoint.objects.exists()
    webhook_endpoint_change_approve(change=change, approver=UserFactory(username="al", roles=["Approvers"]))
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.event_types == ["payment.failed"] and endpoint.secret.startswith("whsec_")
    entry = AuditEntry.objects.get(action="webhook_endpoint_create")
    assert entry.object_id == str(endpoint.pk) and entry.details["event_types"] == ["payment.failed"]
    assert endpoint.secret not in str(entry.details)


def test_editing_an_endpoint_to_an_internal_url_shows_why_and_changes_nothing(operator_client, public_endpoint):
    url = reverse("admin:notifications_webhookendpoint_change", args=[public_endpoint.pk])
    response = operator_client.post(url, {"url": "https://10.0.0.8/hooks", "description": "moved"})
    assert response.status_code == 200
    assert "private address" in str(response.context["adminform"].form.errors["url"])
    endpoint = WebhookEndpoint.objects.get()
    assert (endpoint.url, endpoint.description) == ("https://hooks.merchant.example/hooks", "")
    assert not AuditEntry.objects.filter(action="webhook_endpoint_update").exists()


def test_editing_an_endpoint_goes_through_the_service_and_keeps_the_secret(
    operator_client, operator, public_endpoint, dns
):
    dns.answer("new.merchant.example", "93.184.215.15")
    url = reverse("admin:notifications_webhookendpoint_change", args=[public_endpoint.pk])
    response = operator_client.post(
        url,
        {
            "url": "https://new.merchant.example/in",
            "description": "moved",
            "event_types": ["refund.failed"],
        },
    )
    assert response.status_code == 302
    assert WebhookEndpoint.objects.get().url == "https://hooks.merchant.example/hooks"  # until approved
    approver = UserFactory(username="al", roles=["Approvers"])
    webhook_endpoint_change_approve(change=WebhookEndpointChange.objects.get(), approver=approver)
    endpoint = WebhookEndpoint.objects.get()
    assert (endpoint.url, endpoint.description, endpoint.event_types) == (
        "https://new.merchant.example/in",
        "moved",
        ["refund.failed"],
    )
    assert endpoint.secret == public_endpoint.secret and endpoint.merchant == public_endpoint.merchant
    assert AuditEntry.objects.get(action="webhook_endpoint_change_request").actor == operator
    entry = AuditEntry.objects.get(action="webhook_endpoint_update")
    assert entry.actor == approver and entry.details["changes"]["url"] == [
        "https://hooks.merchant.example/hooks",
        "https://new.merchant.example/in",
    ]


def test_operators_get_the_endpoint_actions_and_viewers_none(operator_client, viewer_client, public_endpoint):
    assert action_choices(operator_client.get(ENDPOINTS_URL)) >= ENDPOINT_ACTIONS
    assert action_choices(viewer_client.get(ENDPOINTS_URL)) & ENDPOINT_ACTIONS == set()


def test_a_forged_endpoint_action_by_a_viewer_changes_nothing(viewer_client, public_endpoint):
    secret = public_endpoint.secret
    confirm_action(viewer_client, ENDPOINTS_URL, "rotate_secret", [public_endpoint], reason="forged")
    run_action(viewer_client, ENDPOINTS_URL, "send_test", [public_endpoint], reason=None)
    assert WebhookEndpoint.objects.get().secret == secret
    assert not Notification.objects.exists()


def test_send_test_queues_a_test_webhook_per_enabled_endpoint(operator_client, merchant, public_endpoint):
    disabled = webhook_endpoint_create(merchant=merchant, url="https://hooks.merchant.example/old")
    WebhookEndpoint.objects.filter(pk=disabled.pk).update(enabled=False, disabled_at=disabled.created_at)
    response = operator_client.post(
        ENDPOINTS_URL,
        {"action": "send_test", "index": 0, ACTION_CHECKBOX_NAME: [public_endpoint.pk, disabled.pk]},
        follow=True,
    )
    assert messages_of(response) == ["1 test webhooks queued, 1 skipped: the endpoint is disabled; re-enable it first"]
    notification = Notification.objects.get()
    assert (notification.event_type, notification.endpoint) == ("webhook.test", public_endpoint)


def test_rotate_secret_asks_for_a_reason_and_keeps_the_old_secret_for_the_overlap(operator_client, public_endpoint):
    old_secret = public_endpoint.secret
    first = run_action(operator_client, ENDPOINTS_URL, "rotate_secret", [public_endpoint], reason=None)
    assert first.status_code == 200 and "reason" in first.context["form"].fields
    assert WebhookEndpoint.objects.get().secret == old_secret  # nothing before the confirmation

    response = confirm_action(
        operator_client, ENDPOINTS_URL, "rotate_secret", [public_endpoint], reason="leaked in a ticket"
    )
    assert messages_of(response) == ["1 rotated"]
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.secret != old_secret and endpoint.previous_secret == old_secret
    entry = AuditEntry.objects.get(action="webhook_secret_rotate")
    assert entry.reason == "leaked in a ticket"
    assert old_secret not in str(entry.details) and endpoint.secret not in str(entry.details)


def test_reenable_checks_the_url_again_and_skips_enabled_endpoints(operator_client, merchant, public_endpoint, dns):
    gone = webhook_endpoint_create(merchant=merchant, url="https://hooks.merchant.example/gone")
    WebhookEndpoint.objects.filter(pk=gone.pk).update(
        enabled=False, disabled_at=gone.created_at, disabled_reason="it answered 410 Gone"
    )
    response = confirm_action(operator_client, ENDPOINTS_URL, "reenable", [public_endpoint, gone], reason="fixed")
    assert messages_of(response) == ["1 re-enabled, 1 skipped: already enabled"]
    assert WebhookEndpoint.objects.get(pk=gone.pk).enabled

    WebhookEndpoint.objects.filter(pk=gone.pk).update(enabled=False, disabled_at=gone.created_at)
    dns.answer("hooks.merchant.example", "10.0.0.7")
    response = confirm_action(operator_client, ENDPOINTS_URL, "reenable", [gone], reason="again")
    assert "not public" in response.content.decode()  # back on the confirmation form
    assert not WebhookEndpoint.objects.get(pk=gone.pk).enabled


def test_disable_stops_pending_notifications_and_tells_the_merchant_without_the_internal_reason(
    operator_client, public_endpoint, operator, merchant
):
    queued = webhook_test_send(endpoint=public_endpoint, actor=operator)
    response = confirm_action(
        operator_client, ENDPOINTS_URL, "disable", [public_endpoint], reason="merchant under fraud review"
    )
    assert messages_of(response) == ["1 disabled"]
    endpoint = WebhookEndpoint.objects.get()
    assert not endpoint.enabled and endpoint.disabled_reason == "Paydesk staff disabled it"
    assert Notification.objects.get(pk=queued.pk).status == NotificationStatus.DISABLED
    assert AuditEntry.objects.get(action="webhook_endpoint_disable").reason == "merchant under fraud review"
    run_due_deliveries()
    (message,) = mail.outbox
    assert message.to == [merchant.contact_email] and "Paydesk staff disabled it" in message.body
    assert "fraud" not in message.body + message.alternatives[0][0]


def test_only_staff_granted_view_webhook_secret_see_secrets(operator, operator_client, viewer_client, public_endpoint):
    from django.contrib.auth.models import Permission

    url = reverse("admin:notifications_webhookendpoint_change", args=[public_endpoint.pk])
    for client in (operator_client, viewer_client):  # no role sees secrets by default
        page = client.get(url).content.decode()
        assert public_endpoint.secret not in page and public_endpoint.secret[:10] in page
    operator.user_permissions.add(Permission.objects.get(codename="view_webhook_secret"))
    assert public_endpoint.secret in operator_client.get(url).content.decode()


def test_notifications_list_filters_by_status_type_merchant_and_channel(admin_client, merchant, make_payment):
    other = MerchantFactory()
    webhook_endpoint_create(merchant=merchant, url="https://hooks.merchant.example/hooks")
    process_payment(make_payment().pk)  # a webhook and an e-mail
    for query, expected in [
        ("", 2),
        ("?channel__exact=webhook", 1),
        ("?event_type__exact=payment.succeeded", 2),
        ("?event_type__exact=payment.failed", 0),
        ("?status__exact=pending", 2),
        (f"?merchant__id__exact={merchant.pk}", 2),
        (f"?merchant__id__exact={other.pk}", 0),
    ]:
        response = admin_client.get(NOTIFICATIONS_URL + query)
        assert response.status_code == 200, query
        assert response.context["cl"].result_count == expected, query


def test_resend_needs_the_permission_and_keeps_the_event_id(
    operator_client, viewer_client, merchant, operator, receiver, loopback_allowed
):
    receiver.expect_request("/hooks").respond_with_data("ok")
    endpoint = webhook_endpoint_create(merchant=merchant, url=receiver.url_for("/hooks"))
    original = webhook_test_send(endpoint=endpoint, actor=operator)
    pending = webhook_test_send(endpoint=endpoint, actor=operator)
    run_due_deliveries()
    Notification.objects.filter(pk=pending.pk).update(status=NotificationStatus.PENDING)

    assert "resend" not in action_choices(viewer_client.get(NOTIFICATIONS_URL))
    confirm_action(viewer_client, NOTIFICATIONS_URL, "resend", [original], reason="forged")
    assert Notification.objects.count() == 2

    response = confirm_action(operator_client, NOTIFICATIONS_URL, "resend", [original, pending], reason="lost")
    assert messages_of(response) == ["1 queued again, 1 skipped: still being delivered (it is pending)"]
    resend = Notification.objects.get(resend_of=original)
    assert resend.event_id == original.event_id and resend.requested_by == operator


def test_notification_page_shows_each_try_and_the_payload(admin_client, endpoint, receiver, operator):
    receiver.expect_oneshot_request("/hooks").respond_with_data("teapot", status=418)
    notification = webhook_test_send(endpoint=endpoint, actor=operator)
    run_due_deliveries()
    page = admin_client.get(reverse("admin:notifications_notification_change", args=[notification.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert "teapot" in html and "418" in html and notification.event_id in html and "webhook.test" in html


def test_payment_page_shows_its_notifications_and_their_tries(
    admin_client, make_payment, merchant, receiver, loopback_allowed
):
    receiver.expect_oneshot_request("/hooks").respond_with_data("down", status=503)
    webhook_endpoint_create(merchant=merchant, url=receiver.url_for("/hooks"))
    payment = make_payment()
    process_payment(payment.pk)
    run_due_deliveries()

    page = admin_client.get(reverse("admin:payments_payment_change", args=[payment.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    inline = next(f for f in page.context["inline_admin_formsets"] if f.opts.model is Notification)
    assert {form.original.channel for form in inline} == {Channel.WEBHOOK, Channel.EMAIL}
    assert "1 try: 503" in html and "1 try: sent" in html  # the webhook and the e-mail
    for notification in Notification.objects.filter(payment=payment):
        assert reverse("admin:notifications_notification_change", args=[notification.pk]) in html


def test_a_viewer_sees_the_payments_notifications_read_only(viewer_client, make_payment, merchant):
    webhook_endpoint_create(merchant=merchant, url="https://hooks.merchant.example/hooks")
    payment = make_payment()
    process_payment(payment.pk)
    page = viewer_client.get(reverse("admin:payments_payment_change", args=[payment.pk]))
    assert page.status_code == 200
    inline = next(f for f in page.context["inline_admin_formsets"] if f.opts.model is Notification)
    assert len(list(inline)) == 2
    assert not inline.has_add_permission and not inline.has_change_permission


def test_payments_does_not_import_notifications():
    payments_dir = Path(__file__).resolve().parents[2] / "payments"
    for source in payments_dir.rglob("*.py"):
        text = source.read_text()
        assert "import notifications" not in text and "from notifications" not in text, source


def test_each_action_needs_its_own_permission(public_endpoint):
    user = UserFactory(username="only-tests")
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_webhookendpoint", "send_test_webhook"]))
    assert action_choices(logged_in(user).get(ENDPOINTS_URL)) & ENDPOINT_ACTIONS == {"send_test"}
