"""Payments created many at a time (payments_create_many) and imported from a CSV file in the
admin (payments.imports): the same payments, events, jobs and idempotency as payment_create,
with a fixed number of statements whatever the count; a bad file refuses everything."""

import django_rq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext

from backoffice.models import AuditEntry, Job, JobStatus
from backoffice.runner import run_job
from payments.errors import PaymentError
from payments.models import Payment, PaymentEvent
from payments.services import payments_create_many
from payments.states import PaymentStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.needs_postgres]

IMPORT_URL = "/admin/payments/payment/import/"
CARD = "4111 1111 1111 1111"


def items(count: int, prefix: str = "bulk", **overrides) -> list[dict]:
    return [
        {
            "amount_minor": 1000 + n,
            "currency": "EUR",
            "payment_method": "tok_success",
            "idempotency_key": f"{prefix}-{n}",
            **overrides,
        }
        for n in range(count)
    ]


def test_many_payments_are_created_as_payment_create_would_each_with_its_event_and_queued_job(merchant):
    payments = payments_create_many(merchant=merchant, items=items(5))

    assert [p.idempotency_key for p in payments] == [f"bulk-{n}" for n in range(5)]
    assert len({p.public_id for p in payments}) == 5
    for payment in Payment.objects.filter(pk__in=[p.pk for p in payments]):
        assert payment.status == PaymentStatus.PENDING and payment.merchant == merchant
        event = PaymentEvent.objects.get(payment=payment)
        assert (event.from_status, event.to_status, event.reason) == ("", "pending", "created")
        job = Job.objects.get(object_id=str(payment.pk))
        assert (job.func, job.status) == ("payments.jobs.process_payment", JobStatus.QUEUED)
    assert sorted(django_rq.get_queue("payments").job_ids) == sorted(str(job.pk) for job in Job.objects.all())


def test_creating_many_costs_the_same_statements_for_10_or_200_payments(merchant):
    def statements(count: int, prefix: str) -> int:
        with CaptureQueriesContext(connection) as queries:
            payments_create_many(merchant=merchant, items=items(count, prefix))
        return len(queries)

    statements(1, "warm")  # caches filled once per process (content types)
    assert statements(10, "small") == statements(200, "large")
    assert Payment.objects.count() == 211


def test_a_key_used_before_returns_that_payment_and_creates_nothing_twice(merchant):
    first = payments_create_many(merchant=merchant, items=items(3))

    again = payments_create_many(merchant=merchant, items=items(4))

    assert [p.pk for p in again[:3]] == [p.pk for p in first]
    assert Payment.objects.count() == 4 and Job.objects.count() == 4 and PaymentEvent.objects.count() == 4


def test_one_bad_item_refuses_them_all_and_writes_nothing(merchant):
    payments_create_many(merchant=merchant, items=items(1))
    bad = items(4)
    bad[1]["currency"] = "XXX1"
    bad[2]["payment_method"] = CARD
    bad[3]["amount_minor"] = 999  # bulk-3 is new; bulk-0 below is reused with other details
    bad[0]["amount_minor"] = 5

    with pytest.raises(PaymentError) as refused:
        payments_create_many(merchant=merchant, items=bad)
    errors = refused.value.message_dict
    assert set(errors) == {"item 2: currency", "item 3: payment_method"}
    assert CARD not in str(errors)
    with pytest.raises(PaymentError) as reused:
        payments_create_many(merchant=merchant, items=[bad[0], bad[3]])
    assert "already used" in str(reused.value.message_dict["item 1: idempotency_key"])
    assert Payment.objects.count() == 1 and Job.objects.count() == 1


def csv_file(lines: list[str], name: str = "payments.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, ("\n".join(lines) + "\n").encode(), content_type="text/csv")


HEADER = "amount,currency,payment_method,idempotency_key,merchant_reference"


def test_an_import_is_one_audited_job_that_creates_every_payment_and_shows_its_progress(
    admin_client, admin_user, merchant, settings
):
    settings.BULK_ACTION_CHUNK_SIZE = 4
    lines = [HEADER] + [f"{n}.50,EUR,tok_success,imp-{n},order {n}" for n in range(1, 11)]

    response = admin_client.post(IMPORT_URL, {"merchant": merchant.pk, "file": csv_file(lines)})

    job = Job.objects.get(func="payments.imports.payments_import_run")
    assert response.status_code == 302 and response["Location"] == f"/admin/backoffice/job/{job.pk}/change/"
    assert not Payment.objects.exists()
    assert AuditEntry.objects.get(action="payments_import").actor == admin_user
    assert run_job(str(job.pk)) == {"status": "succeeded"}
    job.refresh_from_db()
    assert job.result == {"total": 10, "done": 10, "skipped": {}}
    created = Payment.objects.order_by("pk")
    assert [(p.amount_minor, p.merchant_reference, p.created_by) for p in created][:2] == [
        (150, "order 1", admin_user),
        (250, "order 2", admin_user),
    ]
    assert created.count() == 10
    assert Job.objects.filter(func="payments.jobs.process_payment").count() == 10
    page = admin_client.get(f"/admin/backoffice/job/{job.pk}/change/").content.decode()
    assert "10 / 10" in page or "10/10" in page


def test_a_file_with_bad_lines_is_refused_whole_listing_each_line_without_echoing_a_card(admin_client, merchant):
    lines = [
        HEADER,
        "12.50,EUR,tok_success,ok-1,",
        "12.505,EUR,tok_success,ok-2,",
        f"1.00,EUR,{CARD},ok-3,",
        "3.00,EUR,tok_success,ok-1,",
    ]

    response = admin_client.post(IMPORT_URL, {"merchant": merchant.pk, "file": csv_file(lines)})

    assert response.status_code == 200
    page = response.content.decode()
    assert "3 problem(s); nothing was imported." in page
    assert "line 3: amount" in page and "line 4: payment_method" in page and "line 5: idempotency_key" in page
    assert CARD not in page and "4111" not in page
    assert not Payment.objects.exists() and not Job.objects.exists()


def test_a_file_without_the_columns_is_refused(admin_client, merchant):
    response = admin_client.post(IMPORT_URL, {"merchant": merchant.pk, "file": csv_file(["amount,currency", "1,EUR"])})

    assert response.status_code == 200
    assert "missing column(s): payment_method, idempotency_key" in response.content.decode()
    assert not Job.objects.exists()


def test_only_users_allowed_to_add_payments_can_import(operator_client, viewer_client, merchant, admin_client):
    lines = [HEADER, "1.00,EUR,tok_success,forged,"]
    for client in (operator_client, viewer_client):
        assert client.get(IMPORT_URL).status_code == 403
        assert client.post(IMPORT_URL, {"merchant": merchant.pk, "file": csv_file(lines)}).status_code == 403
    assert not Job.objects.exists()
    assert "Import payments" in admin_client.get("/admin/payments/payment/").content.decode()
