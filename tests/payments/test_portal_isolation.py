"""Every portal view against another merchant's objects, forged values, CSRF, GET safety and roles."""

import pytest
from django.test import Client

import payments.portal.urls
from backoffice.models import AuditEntry, Job
from payments.models import Payment, PaymentEvent, Refund
from tests.helpers import url

pytestmark = pytest.mark.django_db

PAYMENT_VIEWS = ["payment", "refund_new"]


def written_rows() -> tuple[int, ...]:
    return (
        Payment.objects.count(),
        PaymentEvent.objects.count(),
        Refund.objects.count(),
        Job.objects.count(),
        AuditEntry.objects.count(),
    )


@pytest.mark.parametrize("name", PAYMENT_VIEWS)
def test_another_merchants_payment_is_not_found_like_a_missing_one(owner_client, other_payment, name):
    theirs = owner_client.get(url(name, other_payment.public_id))
    missing = owner_client.get(url(name, "pay_doesnotexist000000000000"))
    assert theirs.status_code == missing.status_code == 404
    assert theirs.content == missing.content
    assert other_payment.public_id.encode() not in theirs.content


def test_refund_post_to_another_merchants_payment_is_404_and_writes_nothing(owner_client, other_payment):
    before = written_rows()
    response = owner_client.post(
        url("refund_new", other_payment.public_id), {"amount": "1.00", "reason": "mine now", "submission_token": "x"}
    )
    assert response.status_code == 404 and written_rows() == before


def test_refund_token_of_own_payment_cannot_refund_another_merchants(owner_client, captured, other_payment):
    mine = captured()
    token = owner_client.get(url("refund_new", mine.public_id)).context["form"]["submission_token"].value()
    response = owner_client.post(
        url("refund_new", other_payment.public_id), {"amount": "1.00", "reason": "r", "submission_token": token}
    )
    assert response.status_code == 404 and not Refund.objects.exists()


def test_lists_dashboard_csv_and_status_never_show_another_merchants_payments(owner_client, other_payment):
    for path in (url("dashboard"), url("payments"), url("export", "payments", "csv"), url("export", "refunds", "csv")):
        response = owner_client.get(path + "?q=theirs")
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert response.status_code == 200
        assert other_payment.public_id.encode() not in body and b"secret@their.example" not in body
    answer = owner_client.get(url("payment_statuses") + f"?id={other_payment.public_id}").json()
    assert answer == {"payments": {}}


def test_switching_to_a_merchant_of_someone_else_is_404(owner_client, other_merchant):
    assert owner_client.post(url("switch"), {"merchant": other_merchant.pk}).status_code == 404
    assert owner_client.get(url("dashboard")).context["request"].merchant != other_merchant


def test_a_forged_session_merchant_falls_back_to_a_merchant_of_the_user(owner_client, other_merchant, merchant):
    session = owner_client.session
    session["merchant_portal_merchant_id"] = other_merchant.pk
    session.save()
    response = owner_client.get(url("payments"))
    assert response.context["request"].merchant == merchant


def test_every_portal_url_is_covered_by_these_tests():
    """A new view must be added to the isolation tests (and to the lists below)."""
    assert {pattern.name for pattern in payments.portal.urls.urlpatterns} == {
        "dashboard",
        "login",
        "logout",
        "password_reset",
        "password_reset_done",
        "password_reset_confirm",
        "password_reset_complete",
        "switch",
        "payments",
        "export",
        "exports",
        "export_download",
        "payment_statuses",
        "payment_new",
        "payment",
        "refund_new",
    }


# --- CSRF, GET safety, roles ----------------------------------------------------------------------


@pytest.fixture
def csrf_client(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    return client


def test_every_form_post_needs_a_csrf_token(csrf_client, captured, merchant):
    payment = captured()
    before = written_rows()
    posts = [
        (
            url("payment_new"),
            {"amount": "1.00", "currency": "EUR", "payment_method": "tok_success", "idempotency_key": "portal_csrf"},
        ),
        (url("refund_new", payment.public_id), {"amount": "1.00", "reason": "r", "submission_token": "x"}),
        (url("switch"), {"merchant": merchant.pk}),
        (url("logout"), {}),
    ]
    for path, data in posts:
        assert csrf_client.post(path, data).status_code == 403, path
    assert written_rows() == before
    anonymous = Client(enforce_csrf_checks=True)
    assert anonymous.post(url("login"), {"username": "olga-owner", "password": "x"}).status_code == 403
    assert anonymous.post(url("password_reset"), {"email": "a@b.example"}).status_code == 403


def test_forms_render_a_csrf_token(owner_client, captured):
    payment = captured()
    for path in (url("payment_new"), url("refund_new", payment.public_id), url("dashboard")):
        assert b'name="csrfmiddlewaretoken"' in owner_client.get(path).content, path
    assert b'name="csrfmiddlewaretoken"' in Client().get(url("login")).content


def test_gets_change_nothing(owner_client, captured, merchant):
    payment = captured()
    before = written_rows()
    for path in (
        url("dashboard"),
        url("payments"),
        url("export", "payments", "csv"),
        url("export", "refunds", "xlsx"),
        url("exports"),
        url("payment", payment.public_id),
        url("refund_new", payment.public_id),
        url("payment_new"),
        url("payment_new") + "?amount=1&currency=EUR&payment_method=tok_success&idempotency_key=k",
        url("payment_statuses") + f"?id={payment.public_id}",
    ):
        response = owner_client.get(path)
        if response.streaming:
            b"".join(response.streaming_content)
        assert response.status_code == 200, path
    assert written_rows() == before
    assert owner_client.get(url("switch") + f"?merchant={merchant.pk}").status_code == 405
    assert owner_client.get(url("logout")).status_code == 405


def test_members_see_payments_but_not_owner_actions(member_client, captured):
    payment = captured()
    assert member_client.get(url("payment", payment.public_id)).status_code == 200
    assert member_client.get(url("payments")).status_code == 200
    assert member_client.get(url("refund_new", payment.public_id)).status_code == 403


def test_portal_pages_are_marked_private(owner_client):
    assert "private" in owner_client.get(url("payments"))["Cache-Control"]


@pytest.mark.parametrize(
    "url",
    [
        "/merchant/payments/a%00b/",
        "/merchant/payments/a%00b/refund/",
        "/merchant/payments/pay_short/",
        "/merchant/payments/status/?id=%00",
        "/merchant/payments/status/?id=pay_%00%00",
    ],
)
def test_odd_bytes_in_payment_ids_answer_404_or_nothing_never_500(url, owner_client):
    response = owner_client.get(url)
    assert response.status_code in (200, 404)
    if response.status_code == 200:
        assert response.json() == {"payments": {}} or response.json() == {}
