"""Exports of payments and refunds (CSV and XLSX), one definition of the columns for the admin,
the portal and the background export job. Rows are read by keyset in chunks of EXPORT_CHUNK
(newest first, by id) and written as they come: memory stays bounded at any size (CSV streams
to the response; XLSX goes through openpyxl's write-only workbook into a temporary file).

Fee and net come from the ledger, which payments cannot import: the ledger registers the
expression that reads a payment's fee (`register_payment_fee`, from ledger.receivers). Net is
what the merchant keeps: captured - fee - refunded (the ledger keeps the fee of a refunded
payment). A payment captured before the ledger existed has an empty fee.

Cells a spreadsheet would run as a formula (=, +, -, @, tab, CR first) are neutralised with a
leading apostrophe (OWASP "CSV injection"): references, reasons and e-mail addresses come from
customers.
"""

import csv
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from django.db.models import BigIntegerField, CharField, F, OuterRef, QuerySet, Subquery, Sum, Value
from django.db.models.expressions import BaseExpression
from django.db.models.functions import Coalesce
from django.http import FileResponse, StreamingHttpResponse
from openpyxl import Workbook

from payments.models import PaymentAttempt, Refund
from payments.money import format_major
from payments.states import CAPTURED, RefundStatus

EXPORT_CHUNK = 1000
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# A negative amount (a net below zero) stays a number, not text.
PLAIN_NUMBER = re.compile(r"-\d+(\.\d+)?")
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# A worksheet holds 1,048,576 rows, the header included.
XLSX_MAX_ROWS = 1_048_575


@dataclass(frozen=True)
class Column:
    """One column of an export: its header and how a row's value is read. `staff_only`
    columns (who requested and decided, staff reasons) are left out of merchants' exports."""

    header: str
    value: Callable[[Any], object]
    staff_only: bool = False


def neutralise(value) -> str:
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_STARTS) and not PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def _major(amount_minor: int | None, currency: str) -> str:
    """The amount as a plain decimal number in major units (no code, no thousands separator)."""
    return "" if amount_minor is None else format_major(amount_minor, currency)


def _utc(moment) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _captured_minor(payment) -> int:
    return payment.amount_minor if payment.status in CAPTURED else 0


def _net_minor(payment) -> int:
    return _captured_minor(payment) - (payment.fee_minor or 0) - payment.refunded_minor


PAYMENT_FIELDS = [
    "public_id",
    "created_at",
    "merchant_reference",
    "status",
    "currency",
    "amount_minor",
    "customer_email",
    "description",
]
PAYMENT_COLUMNS = [
    Column("payment", lambda p: p.public_id),
    Column("created at (UTC)", lambda p: _utc(p.created_at)),
    Column("merchant", lambda p: p.merchant_name),
    Column("merchant reference", lambda p: p.merchant_reference),
    Column("status", lambda p: p.status),
    Column("currency", lambda p: p.currency),
    Column("amount", lambda p: _major(p.amount_minor, p.currency)),
    Column("refunded", lambda p: _major(p.refunded_minor, p.currency)),
    Column("fee", lambda p: _major(p.fee_minor, p.currency) if p.status in CAPTURED else ""),
    Column("net", lambda p: _major(_net_minor(p), p.currency)),
    Column("processor reference", lambda p: p.processor_reference),
    Column("customer email", lambda p: p.customer_email),
    Column("description", lambda p: p.description),
]

REFUND_COLUMNS = [
    Column("refund", lambda r: r.public_id),
    Column("created at (UTC)", lambda r: _utc(r.created_at)),
    Column("payment", lambda r: r.payment.public_id),
    Column("merchant", lambda r: r.payment.merchant.name),
    Column("status", lambda r: r.status),
    Column("currency", lambda r: r.payment.currency),
    Column("amount", lambda r: _major(r.amount_minor, r.payment.currency)),
    Column("reason", lambda r: r.reason, staff_only=True),
    Column("requested by", lambda r: str(r.requested_by), staff_only=True),
    Column("decided by", lambda r: str(r.approved_by or r.rejected_by or ""), staff_only=True),
    Column("processor reference", lambda r: r.gateway_reference),
]


def merchant_columns(columns: list[Column]) -> list[Column]:
    return [column for column in columns if not column.staff_only]


_payment_fee_expressions: list[Callable[[], BaseExpression]] = []


def register_payment_fee(expression: Callable[[], BaseExpression]) -> None:
    """The ledger tells how to read a payment's fee in minor units (NULL when it has none)."""
    if expression not in _payment_fee_expressions:
        _payment_fee_expressions.append(expression)


def _payment_fee() -> BaseExpression:
    if not _payment_fee_expressions:
        return Value(None, output_field=BigIntegerField())
    return _payment_fee_expressions[-1]()


def payments_for_export(payments: QuerySet) -> QuerySet:
    """The payments with what the columns read beside the row: refunded (refunds that
    succeeded), fee (from the ledger) and the processor's reference of the last attempt."""
    refunded = (
        Refund.objects.filter(payment=OuterRef("pk"), status=RefundStatus.SUCCEEDED)
        .order_by()
        .values("payment")
        .annotate(total=Sum("amount_minor"))
        .values("total")
    )
    reference = PaymentAttempt.objects.filter(payment=OuterRef("pk")).exclude(gateway_reference="").order_by("-number")
    # Only the fields the columns read, and the merchant's name rather than a Merchant per row.
    return (
        payments.select_related(None)
        .only(*PAYMENT_FIELDS)
        .annotate(
            merchant_name=F("merchant__name"),
            refunded_minor=Coalesce(Subquery(refunded, output_field=BigIntegerField()), Value(0)),
            fee_minor=_payment_fee(),
            processor_reference=Coalesce(
                Subquery(reference.values("gateway_reference")[:1], output_field=CharField()), Value("")
            ),
        )
    )


def refunds_for_export(refunds: QuerySet) -> QuerySet:
    return refunds.select_related("payment__merchant", "requested_by", "approved_by", "rejected_by")


def in_chunks(queryset: QuerySet, *, after_pk: int | None = None, size: int = EXPORT_CHUNK) -> Iterator[list]:
    """The queryset's objects newest first, a chunk at a time by keyset on the primary key: each
    chunk is one short query (no cursor held across chunks, no OFFSET), so memory and the
    cost per chunk stay flat at any size."""
    queryset = queryset.order_by("-pk")
    while True:
        chunk = list((queryset.filter(pk__lt=after_pk) if after_pk is not None else queryset)[:size])
        if not chunk:
            return
        yield chunk
        after_pk = chunk[-1].pk


def rows_of(objects: Iterable, columns: list[Column]) -> Iterator[list[str]]:
    for item in objects:
        yield [neutralise(column.value(item)) for column in columns]


def headers_of(columns: list[Column]) -> list[str]:
    return [column.header for column in columns]


def all_rows(queryset: QuerySet, columns: list[Column]) -> Iterator[list[str]]:
    for chunk in in_chunks(queryset):
        yield from rows_of(chunk, columns)


class _Echo:
    def write(self, value):
        return value


def csv_response(filename: str, columns: list[Column], queryset: QuerySet) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())

    def lines():
        yield writer.writerow(headers_of(columns))
        for row in all_rows(queryset, columns):
            yield writer.writerow(row)

    return StreamingHttpResponse(
        lines(),
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}.csv"'},
    )


def xlsx_response(filename: str, columns: list[Column], queryset: QuerySet) -> FileResponse:
    """A write-only workbook keeps one row in memory at a time; the file is sent and deleted."""
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title=filename[:31])
    sheet.append(headers_of(columns))
    for row in all_rows(queryset, columns):
        sheet.append(row)
    spool = tempfile.TemporaryFile(suffix=".xlsx")  # noqa: SIM115 - FileResponse closes it
    workbook.save(spool)
    spool.seek(0)
    return FileResponse(spool, as_attachment=True, filename=f"{filename}.xlsx", content_type=XLSX_TYPE)


def export_response(fmt: str, filename: str, columns: list[Column], queryset: QuerySet):
    """The export answered in the request: for lists under the job threshold."""
    return (xlsx_response if fmt == "xlsx" else csv_response)(filename, columns, queryset)
