"""Where a merchant's webhooks go is a four-eyes change for staff: a new endpoint or a new URL
asked for in the admin waits for a second staff member; until then deliveries keep going to
the old URL. The merchant's owner still changes their own URLs in the portal at once."""

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from backoffice.models import AuditEntry
from notifications.endpoints import (
    webhook_endpoint_change_approve,
    webhook_endpoint_change_reject,
    webhook_endpoint_change_request,
    webhook_test_send,
)
from notifications.models import EndpointChangeStatus, WebhookEndpoint, WebhookEndpointChange
from tests.factories import UserFactory
from tests.helpers import confirm_action, logged_in, run_due_deliveries

pytestmark = pytest.mark.django_db

ENDPOINTS_URL = "/admin/notifications/webhookendpoint/"
CHANGES_URL = "/admin/notifications/webhookendpointchange/"


@pytest.fixture
def approver(db):
    return UserFactory(username="april-approver", roles=["Approvers"])


def edit_form(endpoint, **changes) -> dict:
    data = {"url": endpoint.url, "description": endpoint.description, "event_types": endpoint.event_types}
    return {**data, **changes}


def test_a_staff_url_change_waits_for_a_second_person_and_deliveries_keep_the_old_url(
    endpoint, receiver, operator, approver
):
    receiver.expect_request("/hooks").respond_with_data("ok")
    old_url, new_url = endpoint.url, receiver.url_for("/elsewhere")

    response = logged_in(operator).post(f"{ENDPOINTS_URL}{endpoint.pk}/change/", edit_form(endpoint, url=new_url))

    change = WebhookEndpointChange.objects.get()
    assert response.status_code == 302 and response["Location"] == f"{CHANGES_URL}{change.pk}/change/"
    assert (change.endpoint, change.url, change.status) == (endpoint, new_url, EndpointChangeStatus.REQUESTED)
    endpoint.refresh_from_db()
    assert endpoint.url == old_url
    # Until approved, what is sent goes where it went.
    sent = webhook_test_send(endpoint=endpoint, actor=operator)
    run_due_deliveries()
    assert sent.attempts.get().destination == old_url
    assert [request.path for request, _ in receiver.log] == ["/hooks"]

    # The requester cannot approve their own change, even with the permission.
    operator.user_permissions.add(*approver.groups.get().permissions.filter(codename="approve_webhookendpointchange"))
    operator = type(operator).objects.get(pk=operator.pk)
    with pytest.raises(ValidationError, match="needs a second person"):
        webhook_endpoint_change_approve(change=change, approver=operator)
    with pytest.raises(IntegrityError), transaction.atomic():
        WebhookEndpointChange.objects.filter(pk=change.pk).update(decided_by=operator)

    done = confirm_action(
        logged_in(approver), CHANGES_URL, "approve", [change], reason="", note="merchant confirmed by phone"
    )

    assert done.status_code == 200
    change.refresh_from_db()
    endpoint.refresh_from_db()
    assert change.status == EndpointChangeStatus.APPROVED and change.decided_by == approver
    assert endpoint.url == new_url
    actions = list(AuditEntry.objects.order_by("created_at").values_list("action", "actor__username"))
    assert ("webhook_endpoint_change_request", operator.username) in actions
    assert ("webhook_endpoint_update", approver.username) in actions
    assert ("webhook_endpoint_change_approve", approver.username) in actions


def test_a_staff_edit_that_keeps_the_url_applies_at_once(endpoint, operator):
    response = logged_in(operator).post(
        f"{ENDPOINTS_URL}{endpoint.pk}/change/", edit_form(endpoint, description="renamed")
    )

    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.description == "renamed" and not WebhookEndpointChange.objects.exists()


def test_a_new_endpoint_added_by_staff_exists_only_once_approved(
    merchant, receiver, loopback_allowed, operator, approver
):
    url = receiver.url_for("/new")

    response = logged_in(operator).post(
        f"{ENDPOINTS_URL}add/", {"merchant": merchant.pk, "url": url, "description": "", "event_types": []}
    )

    assert response.status_code == 302
    assert not WebhookEndpoint.objects.exists()
    change = WebhookEndpointChange.objects.get()
    assert change.endpoint is None and change.requested_by == operator

    webhook_endpoint_change_approve(change=change, approver=approver, note="asked by the merchant")

    endpoint = WebhookEndpoint.objects.get()
    assert (endpoint.merchant, endpoint.url) == (merchant, url)
    change.refresh_from_db()
    assert change.endpoint == endpoint


def test_a_rejected_change_leaves_the_endpoint_and_a_second_open_change_is_refused(
    endpoint, receiver, operator, approver
):
    change = webhook_endpoint_change_request(
        merchant=endpoint.merchant,
        endpoint=endpoint,
        url=receiver.url_for("/a"),
        event_types=[],
        description="",
        requested_by=operator,
    )
    with pytest.raises(ValidationError, match="already awaits approval"):
        webhook_endpoint_change_request(
            merchant=endpoint.merchant,
            endpoint=endpoint,
            url=receiver.url_for("/b"),
            event_types=[],
            description="",
            requested_by=approver,
        )
    with pytest.raises(ValidationError, match="Say why"):
        webhook_endpoint_change_reject(change=change, approver=approver, note=" ")

    webhook_endpoint_change_reject(change=change, approver=approver, note="the merchant did not ask for it")

    change.refresh_from_db()
    endpoint.refresh_from_db()
    assert change.status == EndpointChangeStatus.REJECTED and endpoint.url == receiver.url_for("/hooks")
    with pytest.raises(ValidationError, match="not awaiting approval"):
        webhook_endpoint_change_approve(change=change, approver=approver)


def test_only_staff_with_the_permission_approve(endpoint, receiver, operator, viewer):
    change = webhook_endpoint_change_request(
        merchant=endpoint.merchant,
        endpoint=endpoint,
        url=receiver.url_for("/a"),
        event_types=[],
        description="",
        requested_by=operator,
    )

    with pytest.raises(ValidationError, match="may not approve"):
        webhook_endpoint_change_approve(change=change, approver=viewer)
    assert WebhookEndpointChange.objects.get().status == EndpointChangeStatus.REQUESTED
