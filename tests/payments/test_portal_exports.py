"""Merchants export their payments, and the refunds of those payments, from the portal's list:
CSV and XLSX, filtered as the list is, their own rows only, with the columns of
payments.exports (refunded, fee, net, processor reference; no staff-only columns). Large ones
are prepared by a background job; only the merchant's members download the file."""

import csv
import io

import pytest
from openpyxl import load_workbook

from backoffice.models import Job
from backoffice.runner import run_job
from ledger.models import Price
from payments import services
from payments.jobs import refund_payment
from payments.models import Export, Payment, new_request_key
from payments.states import PaymentStatus
from tests.factories import PaymentFactory, UserFactory
from tests.helpers import logged_in, merchant_user, url

pytestmark = pytest.mark.django_db


def csv_dicts(response) -> list[dict]:
    assert response.status_code == 200, response.content[:300]
    header, *rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    return [dict(zip(header, row, strict=True)) for row in rows]


@pytest.fixture
def refunded(captured, merchant, owner):
    """100.00 EUR captured at 2.90 % + 0.30, 40.00 of it refunded by the owner."""
    Price.objects.create(merchant=merchant, currency="EUR", rate_bps=290, fixed_minor=30)
    payment = captured(merchant_reference="=2+3")
    refund = services.refund_request_by_merchant(
        payment=payment,
        amount_minor=40_00,
        reason="customer changed their mind",
        requested_by=owner,
        request_key=new_request_key("test"),
    )[0]
    refund_payment(refund.pk)
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.PARTIALLY_REFUNDED
    return payment


def test_payments_export_has_refunded_fee_net_and_processor_reference(owner_client, refunded, other_payment):
    rows = csv_dicts(owner_client.get(url("export", "payments", "csv") + "?status=partially_refunded"))

    assert [row["payment"] for row in rows] == [refunded.public_id]  # not the other merchant's
    row = rows[0]
    assert (row["amount"], row["refunded"], row["fee"], row["net"]) == ("100.00", "40.00", "3.20", "56.80")
    assert row["processor reference"] == refunded.attempts.get().gateway_reference != ""
    assert row["merchant reference"] == "'=2+3"


def test_refunds_export_holds_the_refunds_of_the_listed_payments_without_staff_columns(
    owner_client, refunded, other_payment, make_payment
):
    theirs = services.refund_request(
        payment=other_payment,
        amount_minor=1_00,
        reason="r",
        requested_by=UserFactory(roles=["Finance"]),
        request_key=new_request_key("test"),
    )[0]
    rows = csv_dicts(owner_client.get(url("export", "refunds", "csv")))

    assert [row["payment"] for row in rows] == [refunded.public_id]
    assert theirs.public_id not in {row["refund"] for row in rows}
    assert rows[0]["amount"] == "40.00" and rows[0]["status"] == "succeeded"
    assert not {"reason", "requested by", "decided by"} & set(rows[0])
    # Filtered as the list is: no refunded payment is pending.
    assert csv_dicts(owner_client.get(url("export", "refunds", "csv") + "?status=pending")) == []


def test_payments_xlsx_export(member_client, refunded):
    response = member_client.get(url("export", "payments", "xlsx"))
    assert response.status_code == 200 and ".xlsx" in response["Content-Disposition"]
    sheet = load_workbook(io.BytesIO(b"".join(response.streaming_content)), read_only=True).active
    header, *rows = list(sheet.iter_rows(values_only=True))
    assert header[0] == "payment" and "net" in header and rows[0][0] == refunded.public_id


def test_unknown_kind_or_format_is_404(owner_client):
    assert owner_client.get(url("export", "payouts", "csv")).status_code == 404
    assert owner_client.get(url("export", "payments", "pdf")).status_code == 404


@pytest.fixture
def export_settings(settings, tmp_path):
    settings.EXPORT_DIR = tmp_path / "exports"
    settings.EXPORT_JOB_THRESHOLD = 10
    settings.EXPORT_CHUNK_ROWS = 7
    return settings


def test_a_large_portal_export_is_prepared_in_the_background_for_the_merchants_members(
    export_settings, merchant, other_merchant, owner_client, member_client, other_payment
):
    Payment.objects.bulk_create(
        [PaymentFactory.build(merchant=merchant, status=PaymentStatus.FAILED) for _ in range(25)]
        + [PaymentFactory.build(merchant=merchant, status=PaymentStatus.PENDING) for _ in range(3)]
    )
    export_url = url("export", "payments", "csv") + "?status=failed"
    confirm = owner_client.get(export_url)
    assert confirm.status_code == 200 and b"Prepare the file" in confirm.content and not Export.objects.exists()

    response = owner_client.post(export_url)
    assert response.status_code == 302 and response["Location"] == url("exports")
    export = Export.objects.get()
    assert export.merchant == merchant and export.query == {"status": ["failed"]}
    assert b"being prepared" in owner_client.get(url("exports")).content

    assert run_job(str(Job.objects.get(func="payments.jobs.export_write").pk)) == {"status": "succeeded"}
    download = url("export_download", export.public_id)
    page = member_client.get(url("exports")).content.decode()
    assert f'href="{download}"' in page and "25 / 25 rows" in page

    rows = csv_dicts(member_client.get(download))  # any member of the merchant
    assert len(rows) == 25 and {row["status"] for row in rows} == {"failed"}
    assert other_payment.public_id not in {row["payment"] for row in rows}
    assert not {"reason", "requested by"} & set(rows[0])

    someone_else = merchant_user("them", other_merchant)
    assert logged_in(someone_else).get(download).status_code == 404
    assert b"No exports yet" in logged_in(someone_else).get(url("exports")).content
    staff = UserFactory(username="sam-staff", roles=["Viewers"])  # staff without a membership
    assert logged_in(staff).get(download).status_code == 403
