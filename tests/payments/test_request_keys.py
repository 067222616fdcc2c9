"""Commands that move money run once per request, and the database says so: the same form
posted twice at the same moment, with Redis stopped, makes one refund, one manual settlement
request, one payment. Each post runs in its own thread on its own database connection."""

import pytest
from django.contrib.admin import helpers
from django.test import Client

from backoffice.models import AuditEntry
from payments import services
from payments.errors import PaymentError
from payments.jobs import process_payment
from payments.models import Payment, Refund, SettlementRequest, new_request_key
from payments.selectors import refund_remaining_minor
from payments.states import PaymentStatus
from tests.factories import UserFactory
from tests.helpers import merchant_user, messages_of, run_at_once, shown_hidden_fields, url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.needs_postgres]

PAYMENTS_URL = "/admin/payments/payment/"
# Nothing listens here: every cache and queue call fails as with a stopped Redis.
STOPPED_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture
def redis_stopped(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": STOPPED_REDIS}}
    settings.RQ_QUEUES = {name: {**config, "URL": STOPPED_REDIS} for name, config in settings.RQ_QUEUES.items()}


def client_of(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def post_twice_at_once(user, path: str, data: dict) -> list:
    """Two browsers' worth of the same form, posted at the same instant."""
    clients = [client_of(user), client_of(user)]
    posts = iter(clients)
    return run_at_once(lambda: next(posts).post(path, data, follow=True))


def pages(responses) -> list[str]:
    # The pages' text, not their context: the test client's context capture is not thread-safe.
    return [response.content.decode() for response in responses]


# --- refunds ----------------------------------------------------------------------------------


def test_one_portal_refund_form_posted_twice_at_once_without_redis_refunds_once(redis_stopped, merchant, captured):
    owner = merchant_user("rita-owner", merchant)
    payment = captured(amount_minor=100_00)
    form = client_of(owner).get(url("refund_new", payment.public_id)).context["form"]
    data = {"amount": "30.00", "reason": "parcel lost", "submission_token": form["submission_token"].value()}

    responses = post_twice_at_once(owner, url("refund_new", payment.public_id), data)

    assert [response.status_code for response in responses] == [200, 200]
    refund = Refund.objects.get(payment=payment)
    assert refund.amount_minor == 30_00
    assert refund_remaining_minor(payment) == 70_00
    assert AuditEntry.objects.filter(action="refund_request").count() == 1
    assert sum("already submitted" in page for page in pages(responses)) == 1
    # and later again (back, resubmit): still the one refund, said so
    again = client_of(owner).post(url("refund_new", payment.public_id), data, follow=True)
    assert any("already submitted" in message for message in messages_of(again))
    assert Refund.objects.filter(payment=payment).count() == 1


def test_one_admin_refund_confirmation_posted_twice_at_once_without_redis_refunds_once(redis_stopped, captured):
    finance = UserFactory(username="fred-finance", roles=["Finance"])
    payment = captured(amount_minor=100_00)
    selected = {"action": "refund", helpers.ACTION_CHECKBOX_NAME: [str(payment.pk)]}
    page = client_of(finance).post(PAYMENTS_URL, selected)
    data = {**selected, **shown_hidden_fields(page), "post": "yes", "amount": "30.00", "reason": "parcel lost"}

    responses = post_twice_at_once(finance, PAYMENTS_URL, data)

    assert Refund.objects.filter(payment=payment).count() == 1
    assert refund_remaining_minor(payment) == 70_00
    assert sum("1 refund requested" in page for page in pages(responses)) == 1
    assert sum("already submitted by this form" in page for page in pages(responses)) == 1


def test_an_admin_refund_confirmation_without_its_request_key_refunds_nothing(captured):
    finance = UserFactory(username="fred-finance", roles=["Finance"])
    payment = captured(amount_minor=100_00)
    data = {
        "action": "refund",
        helpers.ACTION_CHECKBOX_NAME: [str(payment.pk)],
        "post": "yes",
        "amount": "30.00",
        "reason": "forged",
    }

    response = client_of(finance).post(PAYMENTS_URL, data)

    assert response.status_code == 200 and "out of date" in response.content.decode()
    assert not Refund.objects.exists()


def test_the_refund_service_returns_the_first_refund_for_a_repeated_request_key(captured):
    finance = UserFactory(username="fred-finance", roles=["Finance"])
    payment = captured(amount_minor=100_00)
    key = new_request_key("test")

    first, created = services.refund_request(
        payment=payment, amount_minor=60_00, reason="r", requested_by=finance, request_key=key
    )
    # the same request again, even asking for more than now remains: the first refund
    again, created_again = services.refund_request(
        payment=payment, amount_minor=60_00, reason="r", requested_by=finance, request_key=key
    )

    assert (created, created_again) == (True, False) and again.pk == first.pk
    assert Refund.objects.count() == 1


@pytest.mark.parametrize("request_key", ["", "short", "4242424242424242", "has spaces in it", "x" * 101])
def test_a_refund_without_a_proper_request_key_is_refused(captured, request_key):
    finance = UserFactory(username="fred-finance", roles=["Finance"])
    with pytest.raises(PaymentError, match="out of date"):
        services.refund_request(
            payment=captured(), amount_minor=1_00, reason="r", requested_by=finance, request_key=request_key
        )
    assert not Refund.objects.exists()


# --- manual settlement requests -------------------------------------------------------------


@pytest.fixture
def unknown_payment(make_payment):
    payment = make_payment(payment_method="tok_error")
    process_payment(payment.pk)
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.UNKNOWN
    return payment


def test_one_settlement_confirmation_posted_twice_at_once_without_redis_asks_once(redis_stopped, unknown_payment):
    operator = UserFactory(username="otto-operator", roles=["Operators"])
    selected = {"action": "request_settlement", helpers.ACTION_CHECKBOX_NAME: [str(unknown_payment.pk)]}
    page = client_of(operator).post(PAYMENTS_URL, selected)
    data = {
        **selected,
        **shown_hidden_fields(page),
        "post": "yes",
        "settle_as": "failed",
        "gateway_reference": "",
        "reason": "the processor has no such charge",
    }

    responses = post_twice_at_once(operator, PAYMENTS_URL, data)

    assert SettlementRequest.objects.filter(payment=unknown_payment).count() == 1
    assert sum("1 sent for approval" in page for page in pages(responses)) == 1
    # the second post is the same request, not a refused second one
    assert sum("already submitted by this form" in page for page in pages(responses)) == 1


# --- payments -------------------------------------------------------------------------------


def test_one_portal_payment_form_posted_twice_at_once_without_redis_makes_one_payment(redis_stopped, merchant):
    owner = merchant_user("rita-owner", merchant)
    form = client_of(owner).get(url("payment_new")).context["form"]
    data = {
        "amount": "12.00",
        "currency": "EUR",
        "payment_method": "tok_success",
        "idempotency_key": form["idempotency_key"].value(),
    }

    responses = post_twice_at_once(owner, url("payment_new"), data)

    assert Payment.objects.filter(merchant=merchant).count() == 1
    assert sum("already submitted" in page for page in pages(responses)) == 1


def test_one_admin_add_payment_form_posted_twice_at_once_without_redis_makes_one_payment(redis_stopped, merchant):
    operator = UserFactory(username="otto-operator", roles=["Operators"], is_superuser=True)
    form = client_of(operator).get("/admin/payments/payment/add/").context["adminform"].form
    data = {
        "merchant": str(merchant.pk),
        "amount": "12.00",
        "currency": "EUR",
        "payment_method": "tok_success",
        "idempotency_key": form["idempotency_key"].value(),
    }

    responses = post_twice_at_once(operator, "/admin/payments/payment/add/", data)

    assert Payment.objects.filter(merchant=merchant).count() == 1
    assert sum("created and queued" in page for page in pages(responses)) == 1
    assert sum("already created by this form" in page for page in pages(responses)) == 1
