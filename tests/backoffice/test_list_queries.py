"""Every list page of the admin and the portal runs the same number of queries whatever the
number of rows it shows: no query per row (the refunds list once ran one per refund for its
merchant column, the payments list a subquery per payment for its latest job)."""

from urllib.parse import urlencode

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test.utils import CaptureQueriesContext

from backoffice.models import JobStatus
from backoffice.paging import CappedPaginator
from payments.models import Payment, Refund
from payments.states import PaymentStatus
from tests.factories import PaymentFactory, UserFactory
from tests.helpers import make_job, url

pytestmark = pytest.mark.django_db

FEW, MANY = 3, 30


def _rows(merchant, requester, start: int, count: int) -> None:
    """`count` captured payments of `merchant`, each with two jobs, a refund awaiting approval
    and its job, like the rows a busy day leaves."""
    payment_type = ContentType.objects.get_for_model(Payment)
    refund_type = ContentType.objects.get_for_model(Refund)
    for number in range(start, start + count):
        payment = PaymentFactory(
            merchant=merchant,
            status=PaymentStatus.SUCCEEDED,
            merchant_reference=f"order-{number}",
            customer_email=f"buyer{number}@shop.example",
        )
        for status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            make_job(content_type=payment_type, object_id=str(payment.pk), status=status)
        refund = Refund.objects.create(payment=payment, amount_minor=100, reason="returned", requested_by=requester)
        make_job(
            func="payments.jobs.refund_payment",
            kwargs={"refund_id": refund.pk},
            content_type=refund_type,
            object_id=str(refund.pk),
            status=JobStatus.FAILED,
        )


def _queries(client, path: str) -> tuple[int, object]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(path)
    assert response.status_code == 200, path
    return len(captured), response


def _shown(response) -> int:
    context = response.context
    if "cl" in context:
        return len(context["cl"].result_list)
    return len(context["page"].object_list)


ADMIN_LISTS = [
    "/admin/payments/payment/",
    "/admin/payments/payment/?" + urlencode({"q": "shop.example"}),
    "/admin/payments/payment/?status__exact=succeeded&currency=EUR",
    "/admin/payments/refund/",
    "/admin/payments/refund/?awaiting=me",
    "/admin/backoffice/job/?func=payments.jobs.refund_payment",
    "/admin/backoffice/job/?status__exact=failed&func=payments.jobs.refund_payment",
]


@pytest.mark.parametrize("path", ADMIN_LISTS)
def test_admin_list_runs_as_many_queries_for_30_rows_as_for_3(admin_client, merchant, path):
    requester = UserFactory(username="rita-requester")
    _rows(merchant, requester, 0, FEW)
    admin_client.get(path)  # warm the per-process caches (content types, the session)
    few, response = _queries(admin_client, path)
    assert _shown(response) == FEW

    _rows(merchant, requester, FEW, MANY - FEW)
    many, response = _queries(admin_client, path)

    assert _shown(response) == MANY
    assert many == few


PORTAL_LISTS = [
    url("payments"),
    url("payments") + "?" + urlencode({"q": "shop.example"}),
    url("payments") + "?status=succeeded&currency=EUR&date_from=2000-01-01",
]


@pytest.mark.parametrize("path", PORTAL_LISTS)
def test_portal_list_runs_as_many_queries_for_25_rows_as_for_3(owner_client, merchant, path):
    requester = UserFactory(username="rita-requester")
    _rows(merchant, requester, 0, FEW)
    owner_client.get(path)
    few, response = _queries(owner_client, path)
    assert _shown(response) == FEW

    _rows(merchant, requester, FEW, MANY - FEW)
    many, response = _queries(owner_client, path)

    assert _shown(response) == 25  # a full page
    assert many == few


def test_portal_dashboard_runs_as_many_queries_for_30_payments_as_for_3(owner_client, merchant):
    requester = UserFactory(username="rita-requester")
    _rows(merchant, requester, 0, FEW)
    owner_client.get(url("dashboard"))
    few, response = _queries(owner_client, url("dashboard"))

    _rows(merchant, requester, FEW, MANY - FEW)
    many, response = _queries(owner_client, url("dashboard"))

    assert len(response.context["latest_payments"]) == 10
    assert many == few


def test_admin_payments_list_shows_each_rows_latest_job_status(admin_client, merchant):
    requester = UserFactory(username="rita-requester")
    _rows(merchant, requester, 0, FEW)

    response = admin_client.get("/admin/payments/payment/")

    # Each payment's newest job is the failed one, made after the succeeded one.
    assert {payment.latest_job_status for payment in response.context["cl"].result_list} == {JobStatus.FAILED}


def test_large_lists_count_only_as_far_as_the_page_needs(admin_client, merchant):
    requester = UserFactory(username="rita-requester")
    _rows(merchant, requester, 0, 12)

    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get("/admin/backoffice/job/")
    counts = [query["sql"] for query in captured if "COUNT(" in query["sql"].upper()]

    assert response.status_code == 200
    # One count, of a LIMITed subquery: never COUNT(*) over the whole table.
    assert len(counts) == 1 and "LIMIT" in counts[0].upper()


def test_capped_paginator_says_how_far_it_counted(merchant):
    PaymentFactory.create_batch(12, merchant=merchant)
    payments = Payment.objects.order_by("pk")

    first = CappedPaginator(payments, 2, page_number=1, lookahead_pages=1)
    assert (first.count, first.capped, first.num_pages) == (4, True, 2)
    assert len(first.page(2).object_list) == 2

    deep = CappedPaginator(payments, 2, page_number=5, lookahead_pages=1)
    assert (deep.count, deep.capped) == (12, False)
    assert [p.pk for p in deep.page(5).object_list] == [p.pk for p in payments[8:10]]
