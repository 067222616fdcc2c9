import pytest
from django.test import override_settings

from backoffice.models import AuditEntry, Job
from payments import services
from payments.errors import PaymentError
from payments.models import Membership, Refund, new_request_key
from payments.states import PaymentStatus, RefundStatus
from tests.factories import PaymentFactory, UserFactory
from tests.helpers import merchant_user, url

pytestmark = pytest.mark.django_db


def refund_form(client, payment):
    response = client.get(url("refund_new", payment.public_id))
    assert response.status_code == 200
    return response.context["form"]


def post_refund(client, payment, form=None, **data):
    form = form or refund_form(client, payment)
    fields = {
        "amount": form["amount"].value(),
        "reason": "customer returned it",
        "submission_token": form["submission_token"].value(),
    }
    fields.update(data)
    return client.post(url("refund_new", payment.public_id), fields)


def test_refund_form_defaults_to_what_remains(owner_client, owner, captured):
    payment = captured(amount_minor=100_00)
    services.refund_request_by_merchant(
        payment=payment, amount_minor=30_00, reason="first", requested_by=owner, request_key=new_request_key("test")
    )
    form = refund_form(owner_client, payment)
    assert form["amount"].value() == "70.00"
    assert "70.00 EUR remains refundable" in form.fields["amount"].help_text


def test_small_refund_is_approved_at_once_and_shown_on_the_payment(owner_client, owner, captured):
    payment = captured(amount_minor=100_00)
    response = post_refund(owner_client, payment, amount="25.50")
    assert response.status_code == 302 and response["Location"] == url("payment", payment.public_id)
    refund = Refund.objects.get(payment=payment)
    assert (refund.amount_minor, refund.status, refund.requested_by) == (25_50, RefundStatus.APPROVED, owner)
    assert Job.objects.filter(func=services.REFUND_JOB, kwargs__refund_id=refund.pk).exists()
    audit = AuditEntry.objects.get(action="refund_request")
    assert audit.actor == owner and audit.details["via"] == "merchant portal"
    page = owner_client.get(response["Location"])
    html = page.content.decode()
    assert "25.50 EUR" in html and "Approved" in html and refund.public_id in html and "customer returned it" in html
    assert "approved and on its way" in html


@override_settings(PAYMENTS_REFUND_APPROVAL_THRESHOLD={"default": "50"})
def test_large_refund_waits_for_a_staff_approver(owner_client, owner, captured):
    payment = captured(amount_minor=100_00)
    post_refund(owner_client, payment)
    refund = Refund.objects.get(payment=payment)
    assert refund.status == RefundStatus.REQUESTED and refund.needs_approval
    assert not Job.objects.filter(func=services.REFUND_JOB).exists()
    page = owner_client.get(url("payment", payment.public_id)).content.decode()
    assert "Awaiting approval" in page
    assert "Refunds awaiting approval by Paydesk" in owner_client.get(url("dashboard")).content.decode()
    approver = UserFactory(username="arthur-approver", roles=["Approvers"])
    services.refund_approve(refund=refund, approver=approver)
    refund.refresh_from_db()
    assert refund.status == RefundStatus.APPROVED


def test_double_submit_of_one_refund_form_creates_one_refund(owner_client, captured):
    payment = captured(amount_minor=100_00)
    form = refund_form(owner_client, payment)
    first = post_refund(owner_client, payment, form=form, amount="10.00")
    second = post_refund(owner_client, payment, form=form, amount="10.00")
    assert first.status_code == second.status_code == 302
    assert Refund.objects.filter(payment=payment).count() == 1
    assert "already submitted" in owner_client.get(second["Location"]).content.decode()


def test_a_forged_or_borrowed_submission_token_is_refused(owner_client, owner, captured):
    payment, another = captured(), captured()
    borrowed = refund_form(owner_client, another)["submission_token"].value()
    for token in ("forged", borrowed):
        response = post_refund(owner_client, payment, submission_token=token)
        assert response.status_code == 200 and "This form has expired" in response.content.decode()
        # A fresh token comes back so that the next submit works.
        assert response.context["form"]["submission_token"].value() != token
    assert not Refund.objects.exists()
    retry = response.context["form"]
    assert post_refund(owner_client, payment, form=retry, amount="1.00").status_code == 302


BAD_REFUNDS = [
    ("ten", "amount", "Enter an amount such as 12.34."),
    ("1.001", "amount", "EUR has 2 decimal places"),
    ("0", "amount", "The amount must be greater than zero."),
    ("-1", "amount", "The amount must be greater than zero."),
    ("100.01", "amount", "100.01 EUR is more than the 100.00 EUR that remains refundable."),
]


@pytest.mark.parametrize("amount,field,message", BAD_REFUNDS)
def test_bad_refund_amounts_show_the_error_keep_the_input_and_write_nothing(
    owner_client, captured, amount, field, message
):
    payment = captured(amount_minor=100_00)
    response = post_refund(owner_client, payment, amount=amount)
    assert response.status_code == 200
    form = response.context["form"]
    assert message in " ".join(form.errors[field]) and form["amount"].value() == amount
    assert not Refund.objects.exists() and not AuditEntry.objects.exists()


def test_refund_needs_a_reason(owner_client, captured):
    payment = captured()
    response = post_refund(owner_client, payment, reason="   ")
    assert "This field is required." in " ".join(response.context["form"].errors["reason"])
    assert not Refund.objects.exists()


def test_refund_racing_another_refund_gets_the_service_error_on_the_field(owner_client, owner, captured):
    payment = captured(amount_minor=100_00)
    form = refund_form(owner_client, payment)  # shows 100.00 remaining
    services.refund_request_by_merchant(
        payment=payment, amount_minor=60_00, reason="other tab", requested_by=owner, request_key=new_request_key("test")
    )
    response = post_refund(owner_client, payment, form=form, amount="50.00")
    assert response.status_code == 200
    assert "more than the 40.00 EUR that remains refundable" in " ".join(response.context["form"].errors["amount"])
    assert Refund.objects.filter(payment=payment).count() == 1


@pytest.mark.parametrize(
    "status", [PaymentStatus.PENDING, PaymentStatus.FAILED, PaymentStatus.UNKNOWN, PaymentStatus.CANCELED]
)
def test_payments_not_captured_offer_no_refund_and_refuse_a_post(owner_client, merchant, status):
    payment = PaymentFactory(merchant=merchant, status=status)
    page = owner_client.get(url("refund_new", payment.public_id))
    assert page.status_code == 200 and page.context["form"] is None
    response = owner_client.post(
        url("refund_new", payment.public_id), {"amount": "1.00", "reason": "x", "submission_token": "t"}
    )
    assert response.status_code == 200 and not Refund.objects.exists()
    assert "Refund</a>" not in owner_client.get(url("payment", payment.public_id)).content.decode()


def test_members_cannot_refund(member_client, captured):
    payment = captured()
    assert member_client.get(url("refund_new", payment.public_id)).status_code == 403
    response = member_client.post(
        url("refund_new", payment.public_id), {"amount": "1.00", "reason": "x", "submission_token": "t"}
    )
    assert response.status_code == 403 and not Refund.objects.exists()
    assert "Refund</a>" not in member_client.get(url("payment", payment.public_id)).content.decode()


# --- the service behind the page --------------------------------------------------------------


def test_merchant_refund_service_needs_an_owner_of_that_merchant(captured, member, owner, other_merchant):
    payment = captured()
    stranger = merchant_user("oscar-other-owner", other_merchant)
    staff = UserFactory(username="fiona-finance", roles=["Finance"])
    for user in (member, stranger, staff):
        with pytest.raises(PaymentError, match="Only an owner"):
            services.refund_request_by_merchant(
                payment=payment, amount_minor=100, reason="r", requested_by=user, request_key=new_request_key("test")
            )
    owner.is_active = False
    owner.save()
    with pytest.raises(PaymentError, match="Only an owner"):
        services.refund_request_by_merchant(
            payment=payment, amount_minor=100, reason="r", requested_by=owner, request_key=new_request_key("test")
        )
    assert not Refund.objects.exists()


def test_merchant_refund_service_refuses_for_an_inactive_merchant(captured, owner, merchant):
    payment = captured()
    merchant.is_active = False
    merchant.save()
    payment.refresh_from_db()
    with pytest.raises(PaymentError):
        services.refund_request_by_merchant(
            payment=payment, amount_minor=100, reason="r", requested_by=owner, request_key=new_request_key("test")
        )


def test_merchant_owner_needs_no_staff_permission_and_staff_refunds_still_need_it(captured, owner):
    payment = captured()
    Membership.objects.filter(user=owner).update(role=Membership.Role.OWNER)
    refund = services.refund_request_by_merchant(
        payment=payment, amount_minor=100, reason="r", requested_by=owner, request_key=new_request_key("test")
    )[0]
    assert refund.status == RefundStatus.APPROVED
    with pytest.raises(PaymentError, match="permission"):
        services.refund_request(
            payment=payment, amount_minor=100, reason="r", requested_by=owner, request_key=new_request_key("test")
        )


def test_merchant_refunds_share_the_remaining_amount_check(captured, owner):
    payment = captured(amount_minor=10_00)
    services.refund_request_by_merchant(
        payment=payment, amount_minor=10_00, reason="all", requested_by=owner, request_key=new_request_key("test")
    )
    with pytest.raises(PaymentError, match="remains refundable"):
        services.refund_request_by_merchant(
            payment=payment, amount_minor=1, reason="more", requested_by=owner, request_key=new_request_key("test")
        )
