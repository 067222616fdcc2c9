"""The portal's webhook settings (notifications.portal): owners only, scoped to the
merchant."""

import re

import pytest
from django.core import mail
from django.test import Client, override_settings
from django.urls import reverse

import notifications.portal.urls
from backoffice.models import AuditEntry, Job
from notifications.delivery import DELIVER_JOB
from notifications.endpoints import webhook_endpoint_create
from notifications.jobs import deliver_notification
from notifications.models import Notification, NotificationStatus, WebhookEndpoint
from payments.jobs import process_payment
from tests.helpers import run_due_deliveries, url

pytestmark = pytest.mark.django_db

PUBLIC_NAMES = {"hooks.merchant.example": "93.184.216.34", "hooks.other.example": "93.184.216.35"}
PRIVATE_NAMES = {"intranet.merchant.example": "10.0.0.5"}


@pytest.fixture(autouse=True)
def portal_dns(dns):
    for name, address in {**PUBLIC_NAMES, **PRIVATE_NAMES}.items():
        dns.answer(name, address)


def wurl(name: str, *args) -> str:
    return reverse(f"merchant_webhooks:{name}", args=args)


@pytest.fixture
def endpoint(merchant, owner):
    return webhook_endpoint_create(merchant=merchant, url="https://hooks.merchant.example/paydesk", actor=owner)


@pytest.fixture
def other_endpoint(other_merchant):
    return webhook_endpoint_create(merchant=other_merchant, url="https://hooks.other.example/in")


def test_owner_adds_an_endpoint(owner_client, merchant):
    response = owner_client.post(
        wurl("new"),
        {
            "url": "https://hooks.merchant.example/paydesk",
            "description": "shop backend",
            "event_types": ["payment.succeeded", "refund.succeeded"],
        },
    )
    endpoint = WebhookEndpoint.objects.get(merchant=merchant)
    assert response.status_code == 302 and response["Location"] == wurl("detail", endpoint.pk)
    assert endpoint.event_types == ["payment.succeeded", "refund.succeeded"] and endpoint.enabled
    page = owner_client.get(response["Location"]).content.decode()
    assert "https://hooks.merchant.example/paydesk" in page and "Endpoint added" in page
    assert endpoint.secret not in page and endpoint.secret[:10] in page  # masked until revealed
    listing = owner_client.get(wurl("list")).content.decode()
    assert "shop backend" in listing and "payment.succeeded, refund.succeeded" in listing


BAD_URLS = [
    ("ftp://hooks.merchant.example/x", "must start with https://"),
    ("http://hooks.merchant.example/x", "must start with https://"),
    ("hooks.merchant.example", "must start with https://"),
    ("https://10.0.0.1/hook", "a private address"),
    ("https://127.0.0.1/hook", "a loopback address"),
    ("https://169.254.169.254/latest/meta-data", "a cloud metadata address"),
    ("https://intranet.merchant.example/hook", "resolves to an address that is"),
    ("https://localhost/hook", "a local name"),
    ("https://" + "a" * 2000 + ".example/", "at most 2000 characters"),
]


@pytest.mark.parametrize("bad_url,message", BAD_URLS)
def test_bad_or_private_urls_are_refused_next_to_the_field_and_nothing_is_written(owner_client, bad_url, message):
    response = owner_client.post(wurl("new"), {"url": bad_url, "description": "kept", "event_types": []})
    assert response.status_code == 200
    form = response.context["form"]
    assert message in " ".join(form.errors["url"])
    assert form["url"].value() == bad_url and form["description"].value() == "kept"
    html = response.content.decode()
    assert html.index('id="id_url_error"') < html.index('name="url"')
    assert not WebhookEndpoint.objects.exists() and not AuditEntry.objects.exists()


def test_unknown_event_types_are_refused(owner_client):
    response = owner_client.post(wurl("new"), {"url": "https://hooks.merchant.example/x", "event_types": ["evil"]})
    assert "Select a valid choice" in " ".join(response.context["form"].errors["event_types"])
    assert not WebhookEndpoint.objects.exists()


def test_edit_page_shows_the_current_values(owner_client, merchant, owner):
    endpoint = webhook_endpoint_create(
        merchant=merchant,
        url="https://hooks.merchant.example/paydesk",
        event_types=["refund.failed"],
        description="shop backend",
        actor=owner,
    )
    detail = owner_client.get(wurl("detail", endpoint.pk)).content.decode()
    assert f'href="{wurl("edit", endpoint.pk)}"' in detail
    response = owner_client.get(wurl("edit", endpoint.pk))
    form = response.context["form"]
    assert response.status_code == 200 and not form.is_bound
    assert (form["url"].value(), form["description"].value(), form["event_types"].value()) == (
        "https://hooks.merchant.example/paydesk",
        "shop backend",
        ["refund.failed"],
    )
    html = response.content.decode()
    assert "Edit webhook endpoint" in html and f'action="{wurl("edit", endpoint.pk)}"' in html
    assert endpoint.secret not in html


def test_owner_edits_an_endpoint_and_keeps_its_secret(owner_client, endpoint):
    response = owner_client.post(
        wurl("edit", endpoint.pk),
        {
            "url": "https://hooks.other.example/moved",
            "description": "new backend",
            "event_types": ["payment.failed"],
        },
    )
    assert response.status_code == 302 and response["Location"] == wurl("detail", endpoint.pk)
    secret = endpoint.secret
    endpoint.refresh_from_db()
    assert (endpoint.url, endpoint.description, endpoint.event_types, endpoint.secret) == (
        "https://hooks.other.example/moved",
        "new backend",
        ["payment.failed"],
        secret,
    )
    entry = AuditEntry.objects.get(action="webhook_endpoint_update")
    assert entry.actor.username == "olga-owner" and set(entry.details["changes"]) == {
        "url",
        "description",
        "event_types",
    }
    page = owner_client.get(response["Location"]).content.decode()
    assert "Endpoint saved" in page and "https://hooks.other.example/moved" in page


@pytest.mark.parametrize("bad_url,message", BAD_URLS)
def test_an_edit_to_a_bad_or_private_url_is_refused_next_to_the_field_and_changes_nothing(
    owner_client, endpoint, bad_url, message
):
    before = endpoint_state(endpoint)
    response = owner_client.post(
        wurl("edit", endpoint.pk),
        {
            "url": bad_url,
            "description": "kept",
            "event_types": ["refund.failed"],
        },
    )
    assert response.status_code == 200
    form = response.context["form"]
    assert message in " ".join(form.errors["url"])
    assert form["url"].value() == bad_url and form["description"].value() == "kept"
    assert form["event_types"].value() == ["refund.failed"]
    html = response.content.decode()
    assert html.index('id="id_url_error"') < html.index('name="url"')
    assert f'value="{bad_url}"' in html and re.search(r'value="refund\.failed"[^>]*\bchecked\b', html)
    assert endpoint_state(endpoint) == before
    assert not AuditEntry.objects.filter(action="webhook_endpoint_update").exists()


def test_secret_is_revealed_only_on_a_post_and_never_cached(owner_client, endpoint):
    assert owner_client.get(wurl("reveal_secret", endpoint.pk)).status_code == 405
    response = owner_client.post(wurl("reveal_secret", endpoint.pk))
    assert response.status_code == 200 and endpoint.secret in response.content.decode()
    assert "no-store" in response["Cache-Control"]


def test_rotating_keeps_the_previous_secret_signing_for_a_while(owner_client, endpoint):
    old = endpoint.secret
    response = owner_client.post(wurl("rotate_secret", endpoint.pk))
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.secret != old and endpoint.previous_secret == old
    revealed = owner_client.post(wurl("reveal_secret", endpoint.pk)).content.decode()
    assert endpoint.secret in revealed and old in revealed and "previous, signs until" in revealed
    assert AuditEntry.objects.filter(action="webhook_secret_rotate").get().actor.username == "olga-owner"


@override_settings(WEBHOOKS_ALLOW_LOOPBACK=True)
def test_test_event_is_delivered_and_its_attempt_shown(owner_client, merchant, httpserver):
    httpserver.expect_request("/hook", method="POST").respond_with_data("thanks", status=200)
    endpoint = webhook_endpoint_create(merchant=merchant, url=httpserver.url_for("/hook"))
    response = owner_client.post(wurl("send_test", endpoint.pk))
    assert response.status_code == 302
    notification = Notification.objects.get(endpoint=endpoint, event_type="webhook.test")
    page = owner_client.get(wurl("detail", endpoint.pk)).content.decode()
    assert "Test webhook queued" in page and 'http-equiv="refresh"' in page  # it is in flight
    deliver_notification(notification.pk, 1)
    page = owner_client.get(wurl("detail", endpoint.pk)).content.decode()
    assert "Delivered (HTTP 200)" in page and "thanks" in page and notification.event_id in page
    assert 'http-equiv="refresh"' not in page
    request, _response = httpserver.log[0]
    assert request.headers["webhook-id"] == notification.event_id


def test_disable_and_enable(owner_client, endpoint):
    response = owner_client.post(wurl("disable", endpoint.pk))
    endpoint.refresh_from_db()
    assert response.status_code == 302 and not endpoint.enabled
    page = owner_client.get(wurl("detail", endpoint.pk)).content.decode()
    assert "Endpoint disabled" in page and "Disabled since" in page
    assert "olga-owner disabled it in the merchant portal" in page and "staff" not in page
    run_due_deliveries()
    assert mail.outbox == []  # the owner did it: no e-mail about it
    entry = AuditEntry.objects.get(action="webhook_endpoint_disable")
    assert entry.actor.username == "olga-owner" and entry.reason == "disabled by the merchant in the portal"
    assert "Disabled webhook endpoints" in owner_client.get(url("dashboard")).content.decode()
    # A test event to a disabled endpoint is refused with a message, nothing queued.
    owner_client.post(wurl("send_test", endpoint.pk))
    assert not Notification.objects.filter(event_type="webhook.test").exists()
    owner_client.post(wurl("enable", endpoint.pk))
    endpoint.refresh_from_db()
    assert endpoint.enabled


def test_payment_page_shows_its_notifications_and_their_attempts(member_client, endpoint, make_payment):
    payment = make_payment()
    process_payment(payment.pk)
    notification = Notification.objects.get(payment=payment, endpoint=endpoint)
    html = member_client.get(url("payment", payment.public_id)).content.decode()
    assert "Notifications" in html and notification.event_id in html and "Payment succeeded" in html
    assert notification.status == NotificationStatus.PENDING


def test_dashboard_counts_failing_webhooks_and_links_them_for_owners_only(
    owner_client, member_client, endpoint, make_payment
):
    payment = make_payment()
    process_payment(payment.pk)
    Notification.objects.filter(endpoint=endpoint).update(status=NotificationStatus.FAILED)
    owner_items = {i.label: i for i in owner_client.get(url("dashboard")).context["attention"]}
    member_items = {i.label: i for i in member_client.get(url("dashboard")).context["attention"]}
    label = "Webhooks that failed for good in the last 7 days"
    assert owner_items[label].count == member_items[label].count == 1
    assert owner_items[label].url == wurl("list") and member_items[label].url == ""


# --- security ---------------------------------------------------------------------------------------

ENDPOINT_GETS = ["detail", "edit"]
ENDPOINT_POSTS = ["reveal_secret", "rotate_secret", "send_test", "disable", "enable", "edit"]
# What a forged edit posts: a valid form, so only the scoping and the role stand in its way.
EDIT_POST = {"url": "https://hooks.merchant.example/forged", "description": "forged", "event_types": []}


def test_every_webhook_url_is_covered_by_these_tests():
    assert {p.name for p in notifications.portal.urls.urlpatterns} == {"list", "new", *ENDPOINT_GETS, *ENDPOINT_POSTS}


def endpoint_state(endpoint) -> tuple:
    endpoint.refresh_from_db()
    return (
        endpoint.enabled,
        endpoint.secret,
        endpoint.previous_secret,
        endpoint.url,
        endpoint.description,
        endpoint.event_types,
        Notification.objects.count(),
        Job.objects.filter(func=DELIVER_JOB).count(),
        AuditEntry.objects.count(),
    )


def request_for(client, name: str, method: str):
    if method == "get":
        return lambda path: client.get(path)
    return lambda path: client.post(path, EDIT_POST if name == "edit" else {})


ENDPOINT_REQUESTS = [(name, "get") for name in ENDPOINT_GETS] + [(name, "post") for name in ENDPOINT_POSTS]


@pytest.mark.parametrize("name,method", ENDPOINT_REQUESTS)
def test_another_merchants_endpoint_is_404_like_a_missing_one_and_unchanged(
    owner_client, endpoint, other_endpoint, name, method
):
    before = endpoint_state(other_endpoint)
    send = request_for(owner_client, name, method)
    theirs, missing = send(wurl(name, other_endpoint.pk)), send(wurl(name, 987654))
    assert theirs.status_code == missing.status_code == 404 and theirs.content == missing.content
    assert b"hooks.other.example" not in theirs.content and other_endpoint.secret.encode() not in theirs.content
    assert endpoint_state(other_endpoint) == before


def test_lists_show_only_the_merchants_endpoints(owner_client, endpoint, other_endpoint):
    html = owner_client.get(wurl("list")).content.decode()
    assert "hooks.merchant.example" in html and "hooks.other.example" not in html


@pytest.mark.parametrize("name,method", ENDPOINT_REQUESTS)
def test_members_cannot_use_webhook_settings(member_client, endpoint, name, method):
    before = endpoint_state(endpoint)
    send = request_for(member_client, name, method)
    assert send(wurl(name, endpoint.pk)).status_code == 403
    assert member_client.get(wurl("list")).status_code == 403
    assert member_client.post(wurl("new"), {"url": "https://hooks.merchant.example/m"}).status_code == 403
    assert endpoint_state(endpoint) == before and WebhookEndpoint.objects.count() == 1


def test_webhooks_link_is_shown_to_owners_only(owner_client, member_client):
    assert wurl("list").encode() in owner_client.get(url("dashboard")).content
    assert wurl("list").encode() not in member_client.get(url("dashboard")).content


def test_webhook_posts_need_csrf_and_gets_change_nothing(owner, owner_client, endpoint):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    before = endpoint_state(endpoint)
    for name in ENDPOINT_POSTS:
        assert request_for(client, name, "post")(wurl(name, endpoint.pk)).status_code == 403, name
    assert client.post(wurl("new"), {"url": "https://hooks.merchant.example/c"}).status_code == 403
    for name in set(ENDPOINT_POSTS) - set(ENDPOINT_GETS):
        assert owner_client.get(wurl(name, endpoint.pk)).status_code == 405, name
    for path in (wurl("list"), wurl("new"), wurl("detail", endpoint.pk), wurl("edit", endpoint.pk)):
        assert owner_client.get(path).status_code == 200
    assert endpoint_state(endpoint) == before and WebhookEndpoint.objects.count() == 1
