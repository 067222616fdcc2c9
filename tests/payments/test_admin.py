from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_rq.settings import get_queues_map

from backoffice.models import AuditEntry, Job, JobStatus
from backoffice.services import job_cancel
from payments.models import Payment, PaymentAttempt, PaymentEvent
from payments.states import AttemptOutcome, PaymentStatus
from tests.factories import MerchantFactory, PaymentFactory, UserFactory
from tests.helpers import action_choices, confirm_action, logged_in, messages_of, run_action

pytestmark = pytest.mark.django_db

PAYMENTS_URL = "/admin/payments/payment/"
ADD_URL = "/admin/payments/payment/add/"


def statuses(*payments) -> list[str]:
    return [Payment.objects.get(pk=payment.pk).status for payment in payments]


def change_url(payment) -> str:
    return reverse("admin:payments_payment_change", args=[payment.pk])


def processing_jobs(payment):
    return Job.objects.filter(object_id=str(payment.pk), func="payments.jobs.process_payment")


# --- the list ---------------------------------------------------------------------------------


def test_payment_changelist_of_50_payments_renders_in_bounded_queries(
    admin_client, make_payment, viewer_client, django_assert_max_num_queries
):
    for number in range(50):
        currency = ("EUR", "JPY", "KWD")[number % 3]
        make_payment(currency=currency, merchant_reference=f"ORD-{number}")

    with django_assert_max_num_queries(12):
        response = admin_client.get(PAYMENTS_URL)
    with django_assert_max_num_queries(16):  # a staff user's permissions cost a few more
        viewer_response = viewer_client.get(PAYMENTS_URL)

    assert response.status_code == viewer_response.status_code == 200
    page = response.content.decode()
    assert "12.50 EUR" in page and "1,250 JPY" in page and "1.250 KWD" in page
    assert "ORD-49" in page
    assert {payment.latest_job_status for payment in response.context["cl"].result_list} == {"pending"}


def test_latest_job_status_is_the_newest_jobs(admin_client, make_payment, admin_user):
    payment = make_payment()
    job_cancel(job=processing_jobs(payment).get(), actor=admin_user, reason="stuck")
    without_live_job = make_payment()
    job_cancel(job=processing_jobs(without_live_job).get(), actor=admin_user, reason="stuck")
    from payments.services import payment_process_now

    payment_process_now(payment=payment, actor=admin_user, reason="try again")

    result = admin_client.get(PAYMENTS_URL).context["cl"].result_list
    assert {row.pk: row.latest_job_status for row in result} == {
        payment.pk: "pending",
        without_live_job.pk: "canceled",
    }


def test_payment_list_filters(admin_client):
    merchant = MerchantFactory()
    failed = PaymentFactory(merchant=merchant, status=PaymentStatus.FAILED, currency="JPY")
    review = PaymentFactory(status=PaymentStatus.UNKNOWN, needs_review=True)
    old = PaymentFactory()
    Payment.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=40))
    today = timezone.localdate()
    midnight = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)

    def listed(query: str) -> set:
        response = admin_client.get(PAYMENTS_URL + query)
        assert response.status_code == 200
        return {row.pk for row in response.context["cl"].result_list}

    assert listed("?status__exact=failed") == {failed.pk}
    assert listed("?currency=JPY") == {failed.pk}
    assert listed(f"?merchant__id__exact={merchant.pk}") == {failed.pk}
    assert listed("?needs_review__exact=1") == {review.pk}
    assert listed("?" + urlencode({"created_at__gte": str(midnight)})) == {failed.pk, review.pk}
    tomorrow = midnight + timedelta(days=1)
    assert listed("?" + urlencode({"created_at__gte": str(midnight), "created_at__lt": str(tomorrow)})) == {
        failed.pk,
        review.pk,
    }
    # No date drill-down (it ran SELECT DISTINCT date_trunc over every payment per page).
    assert admin_client.get(PAYMENTS_URL + f"?created_at__year={today.year}").status_code == 400
    # Nonsense in the query string is the admin's usual "?e=1" redirect, never a 500.
    assert admin_client.get(PAYMENTS_URL + "?created_at__gte=banana").status_code in (200, 302)
    assert admin_client.get(PAYMENTS_URL + "?status__exact=nonsense").status_code == 200


def test_payment_search_by_reference_email_ids_and_gateway_reference(admin_client):
    wanted = PaymentFactory(merchant_reference="ORD-4711", customer_email="ann@shop.example", idempotency_key="cart-99")
    PaymentFactory(merchant_reference="ORD-1000")
    # Two attempts with matching references must not list the payment twice.
    for number in (1, 2):
        PaymentAttempt.objects.create(
            payment=wanted,
            number=number,
            idempotency_key=f"{wanted.public_id}_a{number}",
            gateway_reference=f"sim_ch_abc{number}",
            outcome=AttemptOutcome.DECLINED,
        )

    def found(term: str) -> list:
        response = admin_client.get(PAYMENTS_URL, {"q": term})
        assert response.status_code == 200
        return [row.pk for row in response.context["cl"].result_list]

    assert found("4711") == [wanted.pk]
    assert found("ann@shop") == [wanted.pk]
    assert found(wanted.public_id) == [wanted.pk]
    assert found("cart-99") == [wanted.pk]
    assert found("sim_ch_abc") == [wanted.pk]
    assert found("%_'\"") == []


# --- the payment's page ----------------------------------------------------------------------


def test_payment_page_shows_attempts_history_jobs_and_staff_actions_read_only(
    admin_client,
    make_payment,
    admin_user,
    django_capture_on_commit_callbacks,
    django_assert_max_num_queries,
):
    with django_capture_on_commit_callbacks(execute=True):
        payment = make_payment(payment_method="tok_decline", merchant_reference="ORD-9")
    job = processing_jobs(payment).get()
    from payments.jobs import process_payment

    process_payment(payment.pk)
    Job.objects.filter(pk=job.pk).update(
        status=JobStatus.SUCCEEDED,
        attempts=1,
        started_at=timezone.now() - timedelta(seconds=1),
        finished_at=timezone.now(),
        last_error="",
    )
    run_action(admin_client, PAYMENTS_URL, "retry_failed", [payment], reason="customer topped up")

    with django_assert_max_num_queries(16):
        response = admin_client.get(change_url(payment))

    assert response.status_code == 200
    page = response.content.decode()
    attempt = payment.attempts.get()
    assert attempt.gateway_reference in page and attempt.error_code in page  # attempts
    assert "customer topped up" in page  # the event's and the audit entry's reason
    assert page.count(reverse("admin:backoffice_job_change", args=[job.pk])) == 1
    assert reverse("admin:django_rq_job_detail", args=[get_queues_map()["payments"], str(job.pk)]) in page
    assert "1/5" in page and "1.000 s" in page  # attempts and duration of the finished job
    assert "12.50 EUR" in page and "ORD-9" in page
    assert 'name="_save"' not in page
    assert admin_client.post(change_url(payment), {"status": "succeeded"}).status_code == 403
    assert statuses(payment) == ["pending"]


def test_viewer_sees_the_payment_page_without_django_rq_links(viewer_client, make_payment):
    payment = make_payment()
    Job.objects.update(queued_at=timezone.now(), status=JobStatus.QUEUED)

    response = viewer_client.get(change_url(payment))

    assert response.status_code == 200
    assert reverse("admin:backoffice_job_change", args=[processing_jobs(payment).get().pk]) in response.content.decode()
    assert "/admin/django_rq/" not in response.content.decode()


def test_payments_are_never_deleted_in_the_admin(admin_client, make_payment):
    payment = make_payment()

    assert (
        admin_client.post(reverse("admin:payments_payment_delete", args=[payment.pk]), {"post": "yes"}).status_code
        == 403
    )
    assert "delete_selected" not in action_choices(admin_client.get(PAYMENTS_URL))
    assert Payment.objects.filter(pk=payment.pk).exists()


# --- actions -----------------------------------------------------------------------------------


def test_process_now_queues_pending_payments_without_a_live_job_and_skips_the_rest(
    admin_client, make_payment, admin_user
):
    stuck = make_payment()
    job_cancel(job=processing_jobs(stuck).get(), actor=admin_user, reason="lost")
    already_queued = make_payment()
    failed = PaymentFactory(status=PaymentStatus.FAILED)

    done = run_action(
        admin_client, PAYMENTS_URL, "process_now", [stuck, already_queued, failed], reason="worker was down"
    )

    [message] = messages_of(done)
    assert message.startswith("1 queued, 2 skipped: ")
    assert "1 already queued" in message and "1 not pending (it is failed)" in message
    assert processing_jobs(stuck).filter(status=JobStatus.PENDING).count() == 1
    assert processing_jobs(already_queued).count() == 1
    assert not processing_jobs(failed).exists()
    assert AuditEntry.objects.filter(action="payment_process", reason="worker was down").count() == 1


def test_retry_failed_shows_a_confirmation_then_queues_failed_payments(admin_client, admin_user):
    failed = [PaymentFactory(status=PaymentStatus.FAILED) for _ in range(2)]
    pending = PaymentFactory(status=PaymentStatus.PENDING)

    confirmation = run_action(admin_client, PAYMENTS_URL, "retry_failed", [*failed, pending], reason=None)

    assert confirmation.status_code == 200
    page = confirmation.content.decode()
    assert "Retry 3 payments?" in page
    assert f"{failed[0].public_id} 12.50 EUR failed" in page
    assert statuses(*failed, pending) == ["failed", "failed", "pending"]

    without_reason = confirm_action(admin_client, PAYMENTS_URL, "retry_failed", [*failed, pending], reason="")

    assert "This field is required." in without_reason.content.decode()
    assert statuses(*failed, pending) == ["failed", "failed", "pending"]

    done = confirm_action(admin_client, PAYMENTS_URL, "retry_failed", [*failed, pending], reason="card updated")

    assert messages_of(done) == ["2 queued, 1 skipped: not failed (it is pending)"]
    assert statuses(*failed, pending) == ["pending", "pending", "pending"]
    for payment in failed:
        assert processing_jobs(payment).count() == 1
        event = PaymentEvent.objects.filter(payment=payment).latest("created_at")
        assert (event.from_status, event.to_status, event.actor, event.reason) == (
            "failed",
            "pending",
            admin_user,
            "card updated",
        )
    assert not processing_jobs(pending).exists()


def test_operator_cancels_pending_payments_and_skips_the_others(operator_client, operator, make_payment):
    pending = [make_payment(), make_payment()]
    succeeded = PaymentFactory(status=PaymentStatus.SUCCEEDED)
    canceled = PaymentFactory(status=PaymentStatus.CANCELED)

    done = run_action(
        operator_client, PAYMENTS_URL, "cancel_pending", [*pending, succeeded, canceled], reason="customer asked"
    )

    [message] = messages_of(done)
    assert message.startswith("2 canceled, 2 skipped: ")
    assert "1 not pending (it is succeeded)" in message and "1 not pending (it is canceled)" in message
    assert statuses(*pending, succeeded, canceled) == ["canceled", "canceled", "succeeded", "canceled"]
    assert AuditEntry.objects.filter(action="payment_cancel", actor=operator, reason="customer asked").count() == 2


def test_select_all_across_pages_acts_on_the_filtered_list(admin_client):
    failed = [PaymentFactory(status=PaymentStatus.FAILED) for _ in range(3)]
    pending = PaymentFactory(status=PaymentStatus.PENDING)
    url = PAYMENTS_URL + "?status__exact=failed"

    confirmation = run_action(admin_client, url, "retry_failed", failed[:1], reason=None, select_across=1)
    assert "Retry 3 payments?" in confirmation.content.decode()
    done = confirm_action(admin_client, url, "retry_failed", failed[:1], reason="batch retry", select_across=1)

    assert messages_of(done) == ["3 queued"]
    assert statuses(*failed, pending) == ["pending"] * 4
    assert not processing_jobs(pending).exists()


def test_operator_sees_the_operator_payment_actions(operator_client):
    assert action_choices(operator_client.get(PAYMENTS_URL)) == {
        "process_now",
        "retry_failed",
        "cancel_pending",
        "request_settlement",
    }


@pytest.mark.parametrize("action", ["process_now", "retry_failed", "cancel_pending"])
def test_viewer_has_no_payment_actions_and_a_forged_one_changes_nothing(viewer_client, action, admin_user):
    pending = PaymentFactory(status=PaymentStatus.PENDING)
    failed = PaymentFactory(status=PaymentStatus.FAILED)

    assert action_choices(viewer_client.get(PAYMENTS_URL)) == set()
    forged = confirm_action(viewer_client, PAYMENTS_URL, action, [pending, failed], reason="let me")

    assert forged.status_code == 200
    assert messages_of(forged) == []
    assert statuses(pending, failed) == ["pending", "failed"]
    assert not Job.objects.exists() and not AuditEntry.objects.exists() and not PaymentEvent.objects.exists()


def test_each_payment_action_needs_its_own_permission():
    canceller = UserFactory(username="cora-canceller")
    canceller.user_permissions.add(
        Permission.objects.get(codename="view_payment"), Permission.objects.get(codename="cancel_payment")
    )
    client = logged_in(canceller)
    failed = PaymentFactory(status=PaymentStatus.FAILED)

    assert action_choices(client.get(PAYMENTS_URL)) == {"cancel_pending"}
    forged = confirm_action(client, PAYMENTS_URL, "retry_failed", [failed], reason="not mine to do")

    assert messages_of(forged) == ["No action selected."]
    assert statuses(failed) == ["failed"]


# --- adding a payment ----------------------------------------------------------------------------


def add_form_data(client, for_merchant, **overrides) -> dict:
    """The add form as the browser posts it, with the idempotency key the page generated."""
    page = client.get(ADD_URL)
    assert page.status_code == 200
    data = {
        "merchant": for_merchant.pk,
        "amount": "12.34",
        "currency": "EUR",
        "payment_method": "tok_success",
        "merchant_reference": "ORD-1",
        "customer_email": "ann@shop.example",
        "description": "two mugs",
        "idempotency_key": page.context["adminform"].form["idempotency_key"].value(),
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize(
    ("amount", "currency", "amount_minor"),
    [
        ("12.34", "EUR", 1234),
        ("1200", "jpy", 1200),
        ("1.234", "KWD", 1234),
        ("1,000.5", "EUR", 100050),
    ],
)
def test_add_payment_goes_through_payment_create(admin_client, merchant, admin_user, amount, currency, amount_minor):
    data = add_form_data(admin_client, merchant, amount=amount, currency=currency)

    response = admin_client.post(ADD_URL, data, follow=True)

    payment = Payment.objects.get()
    assert response.redirect_chain[-1][0] == change_url(payment)
    assert (payment.amount_minor, payment.currency, payment.status) == (amount_minor, currency.upper(), "pending")
    assert (payment.merchant, payment.created_by, payment.idempotency_key) == (
        merchant,
        admin_user,
        data["idempotency_key"],
    )
    assert processing_jobs(payment).count() == 1
    assert messages_of(response) == [f"Payment {payment.public_id} created and queued for processing."]


def test_submitting_the_add_form_twice_makes_one_payment(admin_client, merchant):
    data = add_form_data(admin_client, merchant)

    admin_client.post(ADD_URL, data, follow=True)
    again = admin_client.post(ADD_URL, data, follow=True)

    payment = Payment.objects.get()
    assert processing_jobs(payment).count() == 1
    assert messages_of(again) == [f"Payment {payment.public_id} was already created by this form."]


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"currency": "XYZ"}, "currency", "XYZ is not an ISO 4217 currency code."),
        ({"currency": "XAU"}, "currency", "XAU is not an ISO 4217 currency code."),
        ({"amount": "0"}, "amount", "The amount must be greater than zero."),
        ({"amount": "-5.00"}, "amount", "The amount must be greater than zero."),
        ({"amount": "12.345"}, "amount", "EUR has 2 decimal places; 12.345 has more."),
        ({"amount": "12.5", "currency": "JPY"}, "amount", "JPY has 0 decimal places; 12.5 has more."),
        ({"amount": "twelve"}, "amount", "Enter an amount such as 12.34."),
        ({"amount": "1e999999"}, "amount", "Enter an amount such as 12.34."),
        ({"amount": "NaN"}, "amount", "Enter an amount such as 12.34."),
        ({"amount": "99999999999"}, "amount", "The amount is above the maximum"),
        ({"amount": ""}, "amount", "This field is required."),
        ({"payment_method": "tok!"}, "payment_method", "Enter a payment method token such as tok_success."),
        ({"customer_email": "not-an-email"}, "customer_email", "Enter a valid email address."),
        ({"merchant": "999999"}, "merchant", "Select a valid choice."),
        ({"idempotency_key": ""}, "idempotency_key", "This field is required."),
    ],
)
def test_add_payment_with_bad_input_shows_the_error_and_writes_nothing(
    admin_client, merchant, overrides, field, message
):
    data = add_form_data(admin_client, merchant, **overrides)

    response = admin_client.post(ADD_URL, data)

    assert response.status_code == 200
    form = response.context["adminform"].form
    assert any(message in error for error in form.errors[field])
    assert message.replace("'", "&#x27;") in response.content.decode() or field == "idempotency_key"
    assert not Payment.objects.exists() and not Job.objects.exists() and not PaymentEvent.objects.exists()


def test_add_payment_for_an_inactive_merchant_is_refused(admin_client):
    inactive = MerchantFactory(is_active=False)

    response = admin_client.post(ADD_URL, add_form_data(admin_client, inactive))

    assert "Select a valid choice." in response.context["adminform"].form.errors["merchant"][0]
    assert not Payment.objects.exists()


def test_a_card_number_is_refused_and_never_shown_back(admin_client, merchant):
    data = add_form_data(admin_client, merchant, payment_method="4242 4242 4242 4242")

    response = admin_client.post(ADD_URL, data)

    page = response.content.decode()
    assert "Card numbers are never accepted" in page
    assert "4242 4242" not in page
    assert not Payment.objects.exists()


def test_reusing_the_forms_key_with_other_details_is_refused_and_writes_nothing(admin_client, merchant):
    data = add_form_data(admin_client, merchant)
    admin_client.post(ADD_URL, data)
    first = Payment.objects.get()

    response = admin_client.post(ADD_URL, {**data, "amount": "99.00"})

    assert response.status_code == 200
    errors = response.context["adminform"].form.non_field_errors()
    assert any(first.public_id in error and "amount_minor" in error for error in errors)
    assert first.public_id in response.content.decode()
    assert Payment.objects.get() == first
    assert Job.objects.count() == 1


def test_only_users_allowed_to_add_payments_get_the_form(operator_client, viewer_client, merchant):
    data = {
        "merchant": merchant.pk,
        "amount": "1.00",
        "currency": "EUR",
        "payment_method": "tok_success",
        "idempotency_key": "forged",
    }

    for client in (operator_client, viewer_client):
        assert client.get(ADD_URL).status_code == 403
        assert client.post(ADD_URL, data).status_code == 403
    assert not Payment.objects.exists()


def test_the_add_form_needs_its_csrf_token(admin_user, merchant):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    data = {
        "merchant": merchant.pk,
        "amount": "1.00",
        "currency": "EUR",
        "payment_method": "tok_success",
        "idempotency_key": "no-csrf",
    }

    assert client.post(ADD_URL, data).status_code == 403
    assert not Payment.objects.exists()


def test_merchants_are_managed_but_never_deleted(admin_client, merchant):
    assert admin_client.get(reverse("admin:payments_merchant_changelist")).status_code == 200
    response = admin_client.post(
        reverse("admin:payments_merchant_add"),
        {
            "name": "Tea Shop",
            "slug": "tea-shop",
            "contact_email": "tea@shop.example",
            "is_active": "on",
        },
    )
    assert response.status_code == 302
    assert (
        admin_client.post(reverse("admin:payments_merchant_delete", args=[merchant.pk]), {"post": "yes"}).status_code
        == 403
    )
