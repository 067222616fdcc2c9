"""Exports of payments and refunds (CSV and XLSX) with refunded, net and processor reference
columns, in bounded memory: rows are read in chunks and written as they come (CSV streams to
the response; XLSX goes through openpyxl's write-only workbook into a temporary file).

Cells a spreadsheet would run as a formula (=, +, -, @, tab, CR first) are neutralised with a
leading apostrophe, as the portal's CSV does (OWASP "CSV injection"): references, reasons and
e-mail addresses come from customers.
"""

import csv
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC
from decimal import Decimal

from django.db.models import BigIntegerField, CharField, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.http import FileResponse, StreamingHttpResponse
from openpyxl import Workbook

from payments.models import PaymentAttempt, Refund
from payments.money import currency_exponent
from payments.states import CAPTURED, RefundStatus

CHUNK = 1000
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

PAYMENT_COLUMNS = [
    "payment",
    "created at (UTC)",
    "merchant",
    "merchant reference",
    "status",
    "currency",
    "amount",
    "refunded",
    "net",
    "processor reference",
    "customer email",
    "description",
]
REFUND_COLUMNS = [
    "refund",
    "created at (UTC)",
    "payment",
    "merchant",
    "status",
    "currency",
    "amount",
    "reason",
    "requested by",
    "decided by",
    "processor reference",
]


def neutralise(value) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _major(amount_minor: int, currency: str) -> str:
    """The amount as a plain decimal number in major units (no code, no thousands separator)."""
    exponent = currency_exponent(currency)
    return f"{Decimal(amount_minor).scaleb(-exponent):.{exponent}f}"


def payment_rows(payments) -> Iterator[list[str]]:
    """One row per payment, refunded = refunds that succeeded, net = captured minus refunded."""
    refunded = (
        Refund.objects.filter(payment=OuterRef("pk"), status=RefundStatus.SUCCEEDED)
        .order_by()
        .values("payment")
        .annotate(total=Sum("amount_minor"))
        .values("total")
    )
    reference = PaymentAttempt.objects.filter(payment=OuterRef("pk")).exclude(gateway_reference="").order_by("-number")
    rows = (
        payments.select_related("merchant")
        .annotate(
            refunded_minor=Coalesce(Subquery(refunded, output_field=BigIntegerField()), Value(0)),
            processor_reference=Coalesce(
                Subquery(reference.values("gateway_reference")[:1], output_field=CharField()), Value("")
            ),
        )
        .order_by("-created_at", "-pk")
    )
    for payment in rows.iterator(chunk_size=CHUNK):
        captured = payment.amount_minor if payment.status in CAPTURED else 0
        yield [
            payment.public_id,
            payment.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            payment.merchant.name,
            payment.merchant_reference,
            payment.status,
            payment.currency,
            _major(payment.amount_minor, payment.currency),
            _major(payment.refunded_minor, payment.currency),
            _major(captured - payment.refunded_minor, payment.currency),
            payment.processor_reference,
            payment.customer_email,
            payment.description,
        ]


def refund_rows(refunds) -> Iterator[list[str]]:
    rows = refunds.select_related("payment__merchant", "requested_by", "approved_by", "rejected_by").order_by(
        "-created_at", "-pk"
    )
    for refund in rows.iterator(chunk_size=CHUNK):
        payment = refund.payment
        decided_by = refund.approved_by or refund.rejected_by
        yield [
            refund.public_id,
            refund.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            payment.public_id,
            payment.merchant.name,
            refund.status,
            payment.currency,
            _major(refund.amount_minor, payment.currency),
            refund.reason,
            str(refund.requested_by),
            str(decided_by or ""),
            refund.gateway_reference,
        ]


class _Echo:
    def write(self, value):
        return value


def csv_response(filename: str, header: list[str], rows: Iterable[list]) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())

    def lines():
        yield writer.writerow(header)
        for row in rows:
            yield writer.writerow([neutralise(value) for value in row])

    return StreamingHttpResponse(
        lines(),
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}.csv"'},
    )


def xlsx_response(filename: str, header: list[str], rows: Iterable[list]) -> FileResponse:
    """A write-only workbook keeps one row in memory at a time; the file is sent and deleted."""
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title=filename[:31])
    sheet.append(header)
    for row in rows:
        sheet.append([neutralise(value) for value in row])
    spool = tempfile.TemporaryFile(suffix=".xlsx")  # noqa: SIM115 - FileResponse closes it
    workbook.save(spool)
    spool.seek(0)
    return FileResponse(spool, as_attachment=True, filename=f"{filename}.xlsx", content_type=XLSX_TYPE)


def export_response(fmt: str, filename: str, header: list[str], rows: Iterable[list]):
    return (xlsx_response if fmt == "xlsx" else csv_response)(filename, header, rows)
