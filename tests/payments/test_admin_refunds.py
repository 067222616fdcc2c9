"""Refunds and manual settlements in the admin: every role against every action."""

import pytest
from django.contrib.admin import helpers

from backoffice.models import AuditEntry
from payments import services
from payments.jobs import process_payment
from payments.models import Refund, SettlementRequest, new_request_key
from payments.states import PaymentStatus, RefundStatus
from tests.factories import UserFactory
from tests.helpers import action_choices, logged_in, messages_of, shown_hidden_fields

pytestmark = pytest.mark.django_db

PAYMENTS_URL = "/admin/payments/payment/"
REFUNDS_URL = "/admin/payments/refund/"
SETTLEMENTS_URL = "/admin/payments/settlementrequest/"
ROLES = ["Operators", "Finance", "Approvers", "Viewers"]


@pytest.fixture
def users(db):
    return {role: UserFactory(username=f"{role.lower()}-user", roles=[role]) for role in ROLES} | {
        "Approvers2": UserFactory(username="second-approver", roles=["Approvers"]),
    }


@pytest.fixture
def paid(captured):
    """One succeeded payment of 100.00 EUR."""
    return captured()


def post(client, url, action, objects, **data):
    selected = {"action": action, helpers.ACTION_CHECKBOX_NAME: [str(obj.pk) for obj in objects]}
    if data.get("post") == "yes":
        # As a browser does: the confirmation page first, then its form with its hidden fields.
        data = {**shown_hidden_fields(client.post(url, selected)), **data}
    return client.post(url, {**selected, **data}, follow=True)


@pytest.mark.parametrize(
    ("role", "offered"),
    [
        ("Operators", {"process_now", "retry_failed", "cancel_pending", "request_settlement"}),
        ("Finance", {"refund"}),
        ("Approvers", set()),
        ("Viewers", set()),
    ],
)
def test_each_role_sees_only_its_payment_actions(users, role, offered, paid):
    response = logged_in(users[role]).get(PAYMENTS_URL)
    assert action_choices(response) == offered


def test_refund_confirmation_defaults_to_the_remainder_and_refunds(users, paid):
    client = logged_in(users["Finance"])
    page = post(client, PAYMENTS_URL, "refund", [paid])
    assert page.context["form"]["amount"].value() == "100.00"
    assert "Remaining refundable: 100.00 EUR" in page.content.decode()
    done = post(client, PAYMENTS_URL, "refund", [paid], post="yes", amount="30.00", reason="damaged parcel")
    refund = Refund.objects.get()
    assert (refund.amount_minor, refund.status, refund.requested_by) == (30_00, RefundStatus.APPROVED, users["Finance"])
    assert any("1 refund requested" in message for message in messages_of(done))


@pytest.mark.parametrize(
    ("amount", "error"),
    [
        ("12.345", "decimal places"),
        ("abc", "Enter an amount"),
        ("0", "greater than zero"),
        ("-3", "greater than zero"),
        ("100.01", "remains refundable"),
    ],
)
def test_bad_refund_amounts_show_in_the_page_and_write_nothing(users, paid, amount, error):
    client = logged_in(users["Finance"])
    page = post(client, PAYMENTS_URL, "refund", [paid], post="yes", amount=amount, reason="r")
    assert page.status_code == 200 and error in page.content.decode()
    assert page.context["form"]["amount"].value() == amount
    assert not Refund.objects.exists() and not AuditEntry.objects.filter(action="refund_request").exists()


def test_refund_needs_a_reason(users, paid):
    page = post(logged_in(users["Finance"]), PAYMENTS_URL, "refund", [paid], post="yes", amount="1", reason="")
    assert "This field is required" in page.content.decode()
    assert not Refund.objects.exists()


def test_refund_on_several_payments_reports_refused_ones(users, paid, make_payment):
    pending = make_payment()
    done = post(logged_in(users["Finance"]), PAYMENTS_URL, "refund", [paid, pending], post="yes", reason="recall")
    assert any("1 refund requested, 1 skipped: not refundable" in message for message in messages_of(done))
    assert Refund.objects.get().amount_minor == 100_00


@pytest.mark.parametrize("role", ["Operators", "Approvers", "Viewers"])
def test_forged_refund_posts_are_refused(users, paid, role):
    post(logged_in(users[role]), PAYMENTS_URL, "refund", [paid], post="yes", amount="10", reason="forged")
    assert not Refund.objects.exists()


@pytest.fixture
def big_refund(users, paid, settings):
    settings.PAYMENTS_REFUND_APPROVAL_THRESHOLD = {"default": "50"}
    return services.refund_request(
        payment=paid,
        amount_minor=80_00,
        reason="big",
        requested_by=users["Finance"],
        request_key=new_request_key("test"),
    )[0]


def test_awaiting_my_approval_lists_what_others_asked(users, big_refund):
    response = logged_in(users["Approvers"]).get(REFUNDS_URL + "?awaiting=me")
    assert list(response.context["cl"].result_list) == [big_refund]
    assert action_choices(response) == {"approve", "reject"}


def test_approver_approves_and_the_refund_job_is_queued(users, big_refund):
    done = post(logged_in(users["Approvers"]), REFUNDS_URL, "approve", [big_refund], post="yes", note="order checked")
    big_refund.refresh_from_db()
    assert big_refund.status == RefundStatus.APPROVED and big_refund.approved_by == users["Approvers"]
    assert any("1 approved" in message for message in messages_of(done))
    assert AuditEntry.objects.filter(action="refund_approve", actor=users["Approvers"]).exists()


def test_the_requester_cannot_approve_their_own_refund(users, paid, settings):
    settings.PAYMENTS_REFUND_APPROVAL_THRESHOLD = {"default": "50"}
    both = UserFactory(username="finance-and-approver", roles=["Finance", "Approvers"])
    refund = services.refund_request(
        payment=paid, amount_minor=80_00, reason="big", requested_by=both, request_key=new_request_key("test")
    )[0]
    page = post(logged_in(both), REFUNDS_URL, "approve", [refund], post="yes", note="me")
    assert "second person" in page.content.decode()
    refund.refresh_from_db()
    assert refund.status == RefundStatus.REQUESTED


@pytest.mark.parametrize("role", ["Operators", "Finance", "Viewers"])
def test_others_cannot_approve_or_reject_even_by_forged_post(users, big_refund, role):
    client = logged_in(users[role])
    # (Operators may ask to settle an unknown refund by hand: a request, not a decision.)
    assert action_choices(client.get(REFUNDS_URL)) - {"request_settlement"} == set()
    post(client, REFUNDS_URL, "approve", [big_refund], post="yes", note="forged")
    post(client, REFUNDS_URL, "reject", [big_refund], post="yes", note="forged")
    big_refund.refresh_from_db()
    assert big_refund.status == RefundStatus.REQUESTED


def test_reject_needs_a_note(users, big_refund):
    page = post(logged_in(users["Approvers"]), REFUNDS_URL, "reject", [big_refund], post="yes", note="")
    assert "This field is required" in page.content.decode()
    post(logged_in(users["Approvers"]), REFUNDS_URL, "reject", [big_refund], post="yes", note="goods kept")
    big_refund.refresh_from_db()
    assert big_refund.status == RefundStatus.REJECTED and big_refund.decision_note == "goods kept"


def test_payment_page_shows_refunds_remaining_and_audit(admin_client, users, big_refund):
    from django.urls import reverse

    page = admin_client.get(reverse("admin:payments_payment_change", args=[big_refund.payment_id])).content.decode()
    assert big_refund.public_id in page and "20.00 EUR" in page and "refund_request" in page


def test_refund_page_shows_events_and_jobs(admin_client, users, big_refund):
    from django.urls import reverse

    services.refund_approve(refund=big_refund, approver=users["Approvers"], note="ok")
    page = admin_client.get(reverse("admin:payments_refund_change", args=[big_refund.pk])).content.decode()
    assert "requested" in page and "approved" in page and "pending" in page  # the queued job


def test_manual_settlement_through_the_admin(users, make_payment):
    payment = make_payment(payment_method="tok_error")
    process_payment(payment.pk)
    post(
        logged_in(users["Operators"]),
        PAYMENTS_URL,
        "request_settlement",
        [payment],
        post="yes",
        settle_as="failed",
        reason="processor shows no charge",
    )
    settlement = SettlementRequest.objects.get()
    post(logged_in(users["Operators"]), SETTLEMENTS_URL, "approve", [settlement], post="yes", note="forged")
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.UNKNOWN
    post(logged_in(users["Approvers"]), SETTLEMENTS_URL, "approve", [settlement], post="yes", note="confirmed")
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.FAILED


def test_the_refund_report_says_which_refunds_wait_for_a_second_person(users, paid, settings):
    settings.PAYMENTS_REFUND_APPROVAL_THRESHOLD = {"default": "50"}
    done = post(logged_in(users["Finance"]), PAYMENTS_URL, "refund", [paid], post="yes", amount="80", reason="r")
    refund = Refund.objects.get()
    assert any("await a second person's approval" in m and refund.public_id in m for m in messages_of(done))
