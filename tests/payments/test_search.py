"""Search picks the column from the term's shape (payments.search), in the admin and the portal,
and each shape's query can read an index rather than every payment."""

import pytest
from django.db import connection

from payments.models import Payment, PaymentAttempt, Refund
from payments.search import Shape, payment_search, term_shape
from payments.states import AttemptOutcome
from tests.factories import PaymentFactory, UserFactory
from tests.helpers import url

pytestmark = pytest.mark.django_db

PAYMENTS_URL = "/admin/payments/payment/"
REFUNDS_URL = "/admin/payments/refund/"


@pytest.fixture
def shop(merchant):
    """Payments whose columns would match each other's terms if every column were searched."""
    wanted = PaymentFactory(
        merchant=merchant, merchant_reference="ORD-4711", customer_email="ann@shop.example", idempotency_key="cart-99"
    )
    # Its reference looks like the other's e-mail, its e-mail like the other's reference.
    decoy = PaymentFactory(
        merchant=merchant, merchant_reference="ann@shop.example", customer_email="ord-4711@mail.example"
    )
    for number in (1, 2):
        PaymentAttempt.objects.create(
            payment=wanted,
            number=number,
            idempotency_key=f"{wanted.public_id}_a{number}",
            gateway_reference=f"sim_ch_abc{number}",
            outcome=AttemptOutcome.DECLINED,
        )
    return wanted, decoy


@pytest.mark.parametrize(
    "term,shape",
    [
        ("pay_Ab3", Shape.PAYMENT_ID),
        ("re_x9", Shape.REFUND_ID),
        ("ann@shop", Shape.EMAIL),
        ("shop.example", Shape.EMAIL),
        ("sim_ch_abc", Shape.CHARGE_REFERENCE),
        ("ch_0f3a", Shape.CHARGE_REFERENCE),
        ("rf_12", Shape.REFUND_REFERENCE),
        ("ORD-4711", Shape.REFERENCE),
        ("4711", Shape.REFERENCE),
        ("%_'\"", Shape.REFERENCE),
    ],
)
def test_term_shape(term, shape):
    assert term_shape(term) == shape


def test_admin_search_reads_the_column_of_the_terms_shape(admin_client, shop):
    wanted, decoy = shop

    def found(term: str) -> list:
        response = admin_client.get(PAYMENTS_URL, {"q": term})
        assert response.status_code == 200
        return sorted(row.pk for row in response.context["cl"].result_list)

    assert found("ORD-4711") == [wanted.pk]  # the reference, not the decoy's e-mail
    assert found("4711") == [wanted.pk]
    assert found("ann@shop") == [wanted.pk]  # the e-mail, not the decoy's reference
    assert found("ANN@Shop.Example") == [wanted.pk]  # a whole address: equal, in any case
    assert found("nn@shop.example") == []  # ... and only equal
    assert found("cart-99") == [wanted.pk]  # an idempotency key, whole
    assert found(wanted.public_id) == [wanted.pk]
    assert found(wanted.public_id[:10]) == [wanted.pk]
    assert found("pay_zzzzzzzzzzzzzzzzzzzzzzzz") == []
    # Two matching attempts, the payment listed once (EXISTS, no join and DISTINCT).
    assert found("sim_ch_abc") == [wanted.pk]
    assert found("sim_ch_abc2") == [wanted.pk]
    assert found("%_'\"") == []
    assert found("  ") == sorted([wanted.pk, decoy.pk])


def test_a_reference_lists_those_starting_with_it_and_else_those_containing_it(admin_client, merchant):
    exact = PaymentFactory(merchant=merchant, merchant_reference="INV-2026-17")
    longer = PaymentFactory(merchant=merchant, merchant_reference="INV-2026-170")
    inside = PaymentFactory(merchant=merchant, merchant_reference="X-INV-2026-17")

    def found(term: str) -> list:
        return sorted(row.pk for row in admin_client.get(PAYMENTS_URL, {"q": term}).context["cl"].result_list)

    assert found("INV-2026-17") == [exact.pk, longer.pk]
    assert found("NV-2026-17") == sorted([exact.pk, longer.pk, inside.pk])
    assert found("inv-2026-17") == sorted([exact.pk, longer.pk, inside.pk])  # contains ignores case


def test_admin_search_by_a_refund_id_lists_its_payment(admin_client, shop):
    wanted, _ = shop
    refund = Refund.objects.create(
        payment=wanted, amount_minor=100, reason="returned", requested_by=UserFactory(), gateway_reference="rf_77"
    )

    payments = admin_client.get(PAYMENTS_URL, {"q": refund.public_id}).context["cl"].result_list
    refunds = [
        admin_client.get(REFUNDS_URL, {"q": term}).context["cl"].result_list
        for term in (
            refund.public_id,
            wanted.public_id,
            "rf_7",
            "ORD-47",
        )
    ]

    assert [payment.pk for payment in payments] == [wanted.pk]
    assert all([row.pk for row in rows] == [refund.pk] for rows in refunds)


def test_portal_search_never_reads_processor_references(owner_client, shop):
    wanted, _ = shop

    def found(term: str) -> list:
        response = owner_client.get(url("payments"), {"q": term})
        assert response.status_code == 200
        return [payment.pk for payment in response.context["page"].object_list]

    assert found("sim_ch_abc") == []  # gateway references stay inside Paydesk
    assert found("ann@shop") == [wanted.pk]
    assert found(wanted.public_id) == [wanted.pk]
    assert found("ORD-4711") == [wanted.pk]


def test_portal_search_stays_within_the_merchant(owner_client, shop, other_merchant):
    other = PaymentFactory(merchant=other_merchant, merchant_reference="ORD-4711", customer_email="ann@shop.example")

    for term in ("ORD-4711", "ann@shop", other.public_id):
        page = owner_client.get(url("payments"), {"q": term}).context["page"]
        assert other.pk not in [payment.pk for payment in page.object_list], term


@pytest.mark.parametrize(
    "term,index",
    [
        ("ann@shop", "payment_email_trgm"),
        ("ann@shop.example", "payment_email_upper"),
        ("ORD-47", "payment_reference_prefix"),  # some references start with it
        ("RD-47", "payment_reference_trgm"),  # none does: contains
        ("pay_Ab3", "payments_payment_public_id_0c37c47c_like"),
        ("sim_ch_ab", "attempt_gateway_ref"),
    ],
)
def test_each_shape_of_search_can_read_an_index(shop, term, index):
    query = payment_search(Payment.objects.order_by(), term, staff=True)
    sql, params = query.query.sql_with_params()
    with connection.cursor() as cursor:
        # A few rows make any plan cheap; forbidding scans shows which index the query can use.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert index in plan, plan
