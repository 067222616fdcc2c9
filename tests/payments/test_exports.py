"""Exports of the admin's payments and refunds lists: the list's filters, refunded / fee / net /
processor reference columns, CSV and XLSX, formulas neutralised."""

import csv
import io

import pytest
from django.test import Client
from openpyxl import load_workbook

from ledger.models import Price
from payments import services
from payments.exports import neutralise
from payments.jobs import process_payment, refund_payment
from payments.models import new_request_key
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def csv_rows(response) -> list[list[str]]:
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.fixture
def refunded_payment(make_payment, merchant):
    Price.objects.create(merchant=merchant, currency="EUR", rate_bps=290, fixed_minor=30)
    finance = UserFactory(username="fay-finance", roles=["Finance"])
    payment = make_payment(amount_minor=10_00, merchant_reference='=HYPERLINK("http://evil")')
    process_payment(payment.pk)
    payment.refresh_from_db()
    refund = services.refund_request(
        payment=payment, amount_minor=2_50, reason="+1 item", requested_by=finance, request_key=new_request_key("test")
    )[0]
    refund_payment(refund.pk)
    payment.refresh_from_db()
    return payment


def test_payments_csv_has_refunded_fee_net_and_processor_reference(viewer, refunded_payment, make_payment):
    pending = make_payment()  # filtered out below, then alone: no fee, nothing net

    rows = csv_rows(client_for(viewer).get("/admin/payments/payment/export/csv/?status__exact=partially_refunded"))

    header, *data = rows
    assert header[:11] == [
        "payment", "created at (UTC)", "merchant", "merchant reference", "status",
        "currency", "amount", "refunded", "fee", "net", "processor reference",
    ]  # fmt: skip
    assert len(data) == 1
    row = dict(zip(header, data[0], strict=True))
    assert row["payment"] == refunded_payment.public_id
    # The fee (2.90 % + 0.30) comes from the ledger and is kept on a refund: net = 10.00 - 0.59 - 2.50.
    assert (row["amount"], row["refunded"], row["fee"], row["net"]) == ("10.00", "2.50", "0.59", "6.91")
    assert row["processor reference"] == refunded_payment.attempts.get().gateway_reference != ""
    assert row["merchant reference"].startswith("'=HYPERLINK")
    header, pending_row = csv_rows(client_for(viewer).get("/admin/payments/payment/export/csv/?status__exact=pending"))
    row = dict(zip(header, pending_row, strict=True))
    assert (row["payment"], row["fee"], row["net"]) == (pending.public_id, "", "0.00")


def test_payments_xlsx_is_a_workbook_with_the_same_rows(viewer, refunded_payment):
    response = client_for(viewer).get("/admin/payments/payment/export/xlsx/")

    assert response.status_code == 200
    assert "attachment" in response["Content-Disposition"] and ".xlsx" in response["Content-Disposition"]
    sheet = load_workbook(io.BytesIO(b"".join(response.streaming_content)), read_only=True).active
    rows = [list(row) for row in sheet.iter_rows(values_only=True)]
    assert rows[0][0] == "payment" and rows[1][0] == refunded_payment.public_id
    assert rows[1][3].startswith("'=")


def test_refunds_csv(viewer, refunded_payment):
    header, *data = csv_rows(client_for(viewer).get("/admin/payments/refund/export/csv/"))

    row = dict(zip(header, data[0], strict=True))
    assert row["payment"] == refunded_payment.public_id
    assert row["amount"] == "2.50" and row["status"] == "succeeded"
    assert row["reason"] == "'+1 item"  # neutralised
    assert row["requested by"] == "fay-finance"


def test_export_needs_view_permission_and_refuses_foreign_lookups(viewer, refunded_payment):
    nobody = UserFactory(username="no-role")
    assert client_for(nobody).get("/admin/payments/payment/export/csv/").status_code == 403
    assert client_for(viewer).get("/admin/payments/payment/export/csv/?customer_email__regex=.").status_code == 400
    assert client_for(viewer).get("/admin/payments/payment/export/pdf/").status_code == 404


def test_the_list_offers_both_exports_with_its_filters(viewer):
    page = client_for(viewer).get("/admin/payments/payment/?status__exact=failed").content.decode()
    assert "/admin/payments/payment/export/csv/?status__exact=failed" in page
    assert "/admin/payments/payment/export/xlsx/?status__exact=failed" in page


def test_negative_amounts_stay_numbers_while_formulas_are_neutralised():
    # A fully refunded payment's net is below zero (the fee is kept): a number, not text.
    assert neutralise("-0.59") == "-0.59"
    assert neutralise("-2+3") == "'-2+3" and neutralise("=1") == "'=1" and neutralise("@SUM(A1)") == "'@SUM(A1)"
