"""Large exports as background jobs (payments.services.exports): above EXPORT_JOB_THRESHOLD the
admin's export asks for confirmation, then a Job writes the file in keyset chunks with
progress; the job's page links to the file, which only the requester (or a superuser) fetches,
until it expires and the sweeper's retention pass removes it."""

import csv
import io
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from openpyxl import load_workbook

from backoffice.models import Job
from backoffice.retention import retention_apply
from backoffice.runner import run_job
from payments.models import Export, Payment
from payments.services.exports import export_path
from payments.states import PaymentStatus
from tests.factories import MerchantFactory, PaymentFactory, UserFactory

pytestmark = pytest.mark.django_db

EXPORT_URL = "/admin/payments/payment/export/"


@pytest.fixture
def export_settings(settings, tmp_path):
    settings.EXPORT_DIR = tmp_path / "exports"
    settings.EXPORT_JOB_THRESHOLD = 100
    settings.EXPORT_CHUNK_ROWS = 250
    return settings


@pytest.fixture
def many_payments(merchant):
    """1,200 failed payments and 30 pending ones, inserted at once."""
    Payment.objects.bulk_create(
        [
            PaymentFactory.build(
                merchant=merchant,
                status=PaymentStatus.FAILED,
                merchant_reference=f"=cmd|{number}" if number == 7 else f"order-{number}",
            )
            for number in range(1200)
        ]
        + [PaymentFactory.build(merchant=merchant, status=PaymentStatus.PENDING) for _ in range(30)]
    )


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def start_export(client, fmt="csv", query="?status__exact=failed") -> Job:
    confirm = client.get(f"{EXPORT_URL}{fmt}/{query}")
    assert confirm.status_code == 200 and b"Export in the background" in confirm.content
    assert not Export.objects.exists()  # a GET starts nothing
    response = client.post(f"{EXPORT_URL}{fmt}/{query}")
    job = Job.objects.get(func="payments.jobs.export_write")
    assert response.status_code == 302 and response["Location"] == f"/admin/backoffice/job/{job.pk}/change/"
    return job


def test_a_large_export_runs_as_a_job_in_chunks_and_its_page_links_to_the_file(export_settings, many_payments, viewer):
    client = client_for(viewer)
    job = start_export(client)

    with CaptureQueriesContext(connection) as queries:
        assert run_job(str(job.pk)) == {"status": "succeeded"}
    job.refresh_from_db()
    assert (job.progress_done, job.progress_total) == (1200, 1200)
    # Rows are read by keyset, EXPORT_CHUNK_ROWS per query: never the whole list at once.
    chunk_reads = [
        q["sql"] for q in queries.captured_queries if 'FROM "payments_payment"' in q["sql"] and "LIMIT 250" in q["sql"]
    ]
    assert len(chunk_reads) == 6  # five chunks of 250 or fewer, then the empty one that ends it

    page = client.get(f"/admin/backoffice/job/{job.pk}/change/").content.decode()
    export = Export.objects.get()
    download = f"/admin/payments/payment/export/file/{export.public_id}/"
    assert "1,200 / 1,200" in page and f'href="{download}"' in page

    response = client.get(download)
    assert response.status_code == 200 and "attachment" in response["Content-Disposition"]
    header, *rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert header[:3] == ["payment", "created at (UTC)", "merchant"] and "fee" in header and "net" in header
    assert len(rows) == 1200 and {row[4] for row in rows} == {"failed"}  # the list's filter
    assert len({row[0] for row in rows}) == 1200  # each payment once across the chunks
    assert "'=cmd|7" in [row[3] for row in rows]  # formulas neutralised
    assert export.rows == 1200 and export.expires_at > timezone.now() + timedelta(hours=71)
    assert list(export_settings.EXPORT_DIR.iterdir()) == [export_path(export.file_name)]  # no .part left


def test_a_large_xlsx_export_is_a_workbook(export_settings, many_payments, viewer):
    client = client_for(viewer)
    job = start_export(client, fmt="xlsx", query="")
    run_job(str(job.pk))

    response = client.get(Job.objects.get().result["download"])
    sheet = load_workbook(io.BytesIO(b"".join(response.streaming_content)), read_only=True).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][0] == "payment" and len(rows) == 1 + 1230


def test_only_the_requester_or_a_superuser_downloads_a_staff_export(
    export_settings, many_payments, viewer, member_client
):
    job = start_export(client_for(viewer))
    run_job(str(job.pk))
    download = Job.objects.get().result["download"]

    another_viewer = UserFactory(username="vera-viewer", roles=["Viewers"])
    assert client_for(another_viewer).get(download).status_code == 404
    no_role = UserFactory(username="no-role")  # staff without the list's view permission
    assert client_for(no_role).get(download).status_code == 403
    merchant_user = member_client.get(download)  # a merchant's member is not staff
    assert merchant_user.status_code == 302 and "/admin/login/" in merchant_user["Location"]
    boss = UserFactory(username="sue-super", is_superuser=True)
    assert client_for(boss).get(download).status_code == 200
    # An export of payments is not downloadable from the refunds list's address.
    assert client_for(viewer).get(download.replace("/payment/", "/refund/")).status_code == 404


def test_an_expired_export_is_gone_and_prune_removes_its_file(export_settings, many_payments, viewer):
    client = client_for(viewer)
    job = start_export(client)
    run_job(str(job.pk))
    export = Export.objects.get()
    download = Job.objects.get().result["download"]

    Export.objects.filter(pk=export.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.get(download).status_code == 410
    assert retention_apply()["payments.expired_exports"] == 1  # the sweeper's retention pass
    assert not export_path(export.file_name).exists() and not Export.objects.exists()
    assert client.get(download).status_code == 404


def test_a_small_export_is_still_answered_at_once(export_settings, viewer):
    PaymentFactory.create_batch(3, merchant=MerchantFactory())
    response = client_for(viewer).get(f"{EXPORT_URL}csv/")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert not Export.objects.exists()


def test_a_staff_member_who_lost_the_permission_gets_no_file(export_settings, many_payments, viewer):
    job = start_export(client_for(viewer))
    viewer.groups.clear()

    assert run_job(str(job.pk))["status"] in ("retrying", "failed")
    assert not Export.objects.get().file_name and not any(export_settings.EXPORT_DIR.glob("*"))
