"""Buttons on object pages run the list actions on one object (same permission, confirmation,
service and audit); statuses update live; the admin's small layout promises."""

import pytest
from django.test import Client

from backoffice.models import AuditEntry, Job, JobStatus
from payments import services
from payments.jobs import process_payment
from payments.models import Payment, Refund, new_request_key
from payments.states import PaymentStatus, RefundStatus
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page_url(payment) -> str:
    return f"/admin/payments/payment/{payment.pk}/change/"


def button_url(model: str, obj, action: str) -> str:
    return f"/admin/payments/{model}/{obj.pk}/actions/button_{action}/"


def test_operator_sees_the_buttons_a_pending_payment_allows(operator, make_payment):
    page = client_for(operator).get(page_url(make_payment())).content.decode()

    assert "button_process_now" in page and "button_cancel_pending" in page
    assert "button_retry_failed" not in page and "button_refund" not in page


def test_viewer_sees_no_buttons_and_a_forged_one_is_refused(viewer, make_payment):
    payment = make_payment()
    client = client_for(viewer)

    assert "button_cancel_pending" not in client.get(page_url(payment)).content.decode()
    assert client.get(button_url("payment", payment, "cancel_pending")).status_code == 403
    response = client.post(button_url("payment", payment, "cancel_pending"), {"post": "yes", "reason": "x"})
    assert response.status_code == 403
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.PENDING


def test_cancel_button_asks_why_then_cancels_once_with_an_audit_entry(operator, make_payment):
    payment = make_payment()
    client = client_for(operator)

    confirmation = client.get(button_url("payment", payment, "cancel_pending"))
    assert confirmation.status_code == 200
    assert "Cancel 1 payment?" in confirmation.content.decode()
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.PENDING  # GET changes nothing

    done = client.post(button_url("payment", payment, "cancel_pending"), {"post": "yes", "reason": "customer called"})

    assert done.status_code == 302 and done["Location"] == page_url(payment)
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.CANCELED
    entry = AuditEntry.objects.get(action="payment_cancel")
    assert entry.actor == operator and entry.reason == "customer called"


def test_a_refused_button_says_why_and_changes_nothing(operator, make_payment):
    payment = make_payment()
    process_payment(payment.pk)  # succeeded: nothing to cancel any more

    response = client_for(operator).post(
        button_url("payment", payment, "cancel_pending"), {"post": "yes", "reason": "too late"}, follow=True
    )

    assert "not pending" in response.content.decode()
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.SUCCEEDED


@pytest.fixture
def refund_awaiting(make_payment, settings):
    settings.PAYMENTS_REFUND_APPROVAL_THRESHOLD = {"default": "0.01"}
    finance = UserFactory(username="fiona-finance", roles=["Finance"])
    payment = make_payment(amount_minor=4200)
    process_payment(payment.pk)
    payment.refresh_from_db()
    return services.refund_request(
        payment=payment,
        amount_minor=4200,
        reason="parcel lost",
        requested_by=finance,
        request_key=new_request_key("test"),
    )[0]


def test_approve_button_shows_merchant_amount_requester_and_reason_then_approves(refund_awaiting):
    approver = UserFactory(username="april-approver", roles=["Approvers"])
    client = client_for(approver)
    page = client.get(f"/admin/payments/refund/{refund_awaiting.pk}/change/").content.decode()
    assert "button_approve" in page and "button_reject" in page

    confirmation = client.get(button_url("refund", refund_awaiting, "approve")).content.decode()

    for expected in ("42.00 EUR", refund_awaiting.payment.merchant.name, "fiona-finance", "parcel lost"):
        assert expected in confirmation
    client.post(button_url("refund", refund_awaiting, "approve"), {"post": "yes", "note": "checked with carrier"})
    assert Refund.objects.get(pk=refund_awaiting.pk).status != RefundStatus.REQUESTED


def test_the_requester_cannot_approve_their_own_refund_by_button(refund_awaiting, settings):
    requester = refund_awaiting.requested_by
    requester.groups.add(*UserFactory(username="x-approver", roles=["Approvers"]).groups.all())

    client_for(requester).post(button_url("refund", refund_awaiting, "approve"), {"post": "yes", "note": "mine"})

    assert Refund.objects.get(pk=refund_awaiting.pk).status == RefundStatus.REQUESTED


def test_requeue_button_on_a_failed_job(operator, make_payment):
    payment = make_payment()
    job = Job.objects.get(object_id=str(payment.pk))
    Job.objects.filter(pk=job.pk).update(status=JobStatus.FAILED)
    client = client_for(operator)
    url = f"/admin/backoffice/job/{job.pk}/actions/button_requeue/"

    assert "button_requeue" in client.get(f"/admin/backoffice/job/{job.pk}/change/").content.decode()
    client.post(url, {"post": "yes", "reason": "gateway fixed"})

    job.refresh_from_db()
    assert job.status in (JobStatus.PENDING, JobStatus.QUEUED)
    assert AuditEntry.objects.filter(action="job_requeue", actor=operator).exists()


def test_live_status_answers_only_what_the_user_may_view(operator, make_payment):
    payment = make_payment()
    job = Job.objects.get(object_id=str(payment.pk))
    query = f"/admin/live-status/?o=payment:{payment.pk}&o=job:{job.pk}&o=payment:999999&o=bogus:1&o=job:not-a-uuid"

    answer = client_for(operator).get(query).json()["objects"]

    assert set(answer) == {f"payment:{payment.pk}", f"job:{job.pk}"}
    assert answer[f"payment:{payment.pk}"]["status"] == "pending" and answer[f"payment:{payment.pk}"]["moving"]
    nobody = UserFactory(username="no-role")
    assert client_for(nobody).get(query).json()["objects"] == {}


def test_moving_statuses_are_marked_for_the_poller_and_finished_ones_are_not(operator, make_payment):
    moving = make_payment()
    done = make_payment()
    process_payment(done.pk)

    page = client_for(operator).get("/admin/payments/payment/").content.decode()

    assert f'data-live="payment:{moving.pk}"' in page
    assert f'data-live="payment:{done.pk}"' not in page
    assert "backoffice/live_status.js" in page
    assert "<script>" not in page  # static files only (a strict CSP is coming)


def test_needs_review_shows_only_when_raised(operator, make_payment):
    payment = make_payment()
    client = client_for(operator)
    assert "needs review" not in client.get(page_url(payment)).content.decode().split("Needs review:")[1][:200]
    Payment.objects.filter(pk=payment.pk).update(needs_review=True)
    assert 'class="needs-review"' in client.get(page_url(payment)).content.decode()


def test_times_show_seconds(operator, make_payment):
    payment = make_payment()
    page = client_for(operator).get(page_url(payment)).content.decode()
    assert payment.created_at.strftime("%Y-%m-%d %H:%M:%S") in page


def test_forbidden_and_missing_pages_are_styled(viewer, client):
    forbidden = client_for(viewer).get("/admin/payments/payment/add/")
    assert forbidden.status_code == 403
    assert "You may not do this" in forbidden.content.decode()
    assert "backoffice/errors.css" in forbidden.content.decode()
    missing = client.get("/no-such-page/")
    assert missing.status_code == 404 and "Nothing here" in missing.content.decode()


def test_favicon(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("backoffice/favicon.svg")
