"""Large exports as background jobs: `export_request` writes the Export row and its Job in one
transaction; the job (`payments.jobs.export_write`) reads the list again with the same filters,
in keyset chunks, and writes the file under EXPORT_DIR (a `.part` file renamed when complete,
so a half-written file is never served); expired exports go with the sweeper's retention
pass (`expired_exports_before`, `exports_delete`) or `export_files_prune`.

A retried export starts its file again from the first row (its progress too): the file is
rewritten, nothing else changes, so a duplicate run is harmless.
"""

import csv
import os
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import QuerySet
from django.http import FileResponse, HttpResponse, HttpResponseBase
from django.urls import reverse
from django.utils import timezone
from openpyxl import Workbook

from backoffice.models import Job
from backoffice.progress import job_progress
from backoffice.services import audit_record, job_enqueue
from payments.exports import (
    PAYMENT_COLUMNS,
    REFUND_COLUMNS,
    XLSX_MAX_ROWS,
    XLSX_TYPE,
    Column,
    headers_of,
    in_chunks,
    merchant_columns,
    payments_for_export,
    refunds_for_export,
    rows_of,
)
from payments.models import Export, Merchant
from payments.portal.exports import merchant_list

EXPORT_JOB = "payments.jobs.export_write"

# How a staff export finds its rows again in the worker: the admin registers, per kind, a
# function (user, query) -> queryset that rebuilds its list with the same filters (payments
# cannot import its own admin from a job without a cycle).
_staff_lists: dict[str, Callable[..., QuerySet]] = {}


def register_staff_list(kind: str, rows_for: Callable[..., QuerySet]) -> None:
    _staff_lists[kind] = rows_for


def export_needs_job(queryset: QuerySet) -> bool:
    """More rows than EXPORT_JOB_THRESHOLD (counted no further than that)."""
    threshold = settings.EXPORT_JOB_THRESHOLD
    return queryset.order_by()[: threshold + 1].count() > threshold


def export_request(
    *, kind: str, file_format: str, query: dict, requested_by: User, merchant: Merchant | None = None
) -> Job:
    """Write the Export and the Job that writes its file, in one transaction (audited for staff)."""
    with transaction.atomic():
        export = Export.objects.create(
            kind=kind,
            file_format=file_format,
            query=query,
            merchant=merchant,
            requested_by=requested_by,
            # Set again when the file is written; an export that never is expires all the same.
            expires_at=timezone.now() + timedelta(hours=settings.EXPORT_RETENTION_HOURS),
        )
        if merchant is None:
            audit_record(actor=requested_by, action="export_request", target=export, details={"filters": query})
        return job_enqueue(
            func=EXPORT_JOB,
            kwargs={"export_id": export.pk},
            queue="default",
            concerns=export,
            requested_by=requested_by,
            max_attempts=3,
        )


def export_columns(export: Export) -> list[Column]:
    columns = PAYMENT_COLUMNS if export.kind == Export.Kind.PAYMENTS else REFUND_COLUMNS
    return merchant_columns(columns) if export.merchant_id else columns


def export_rows_queryset(export: Export) -> QuerySet:
    """The list the export was asked from, with the same filters, read again in the worker."""
    if export.merchant is not None:
        queryset = merchant_list(merchant=export.merchant, kind=export.kind, query=export.query)
    else:
        queryset = _staff_lists[export.kind](export.requested_by, export.query)
    return payments_for_export(queryset) if export.kind == Export.Kind.PAYMENTS else refunds_for_export(queryset)


def export_path(file_name: str) -> Path:
    return Path(settings.EXPORT_DIR) / file_name


class _CsvFile:
    def __init__(self, path: Path, header: list[str]):
        self.file = path.open("w", newline="", encoding="utf-8")
        self.writer = csv.writer(self.file)
        self.writer.writerow(header)

    def write_rows(self, rows: Iterable[list[str]]) -> None:
        self.writer.writerows(rows)

    def close(self) -> None:
        self.file.close()


class _XlsxFile:
    """openpyxl's write-only workbook keeps rows in its own temporary file, not in memory."""

    def __init__(self, path: Path, header: list[str]):
        self.path = path
        self.workbook = Workbook(write_only=True)
        self.sheet = self.workbook.create_sheet(title="export")
        self.sheet.append(header)

    def write_rows(self, rows: Iterable[list[str]]) -> None:
        for row in rows:
            self.sheet.append(row)

    def close(self) -> None:
        self.workbook.save(self.path)


def export_write(*, export_id: int) -> dict:
    """Write the export's file chunk by chunk with progress; rename it into place when complete."""
    export = Export.objects.select_related("merchant", "requested_by").get(pk=export_id)
    if export.is_ready:
        return {"skipped": "already written", "rows": export.rows}
    queryset = export_rows_queryset(export)
    total = queryset.order_by().count()
    if export.file_format == Export.Format.XLSX and total > XLSX_MAX_ROWS:
        raise ValueError(f"{total:,} rows do not fit in one XLSX sheet ({XLSX_MAX_ROWS:,} at most): export as CSV.")
    progress = job_progress(total=total)
    progress.restart()
    columns = export_columns(export)
    directory = Path(settings.EXPORT_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    file_name = f"{export.public_id}.{export.file_format}"
    part = directory / f"{file_name}.part"
    writer = (_XlsxFile if export.file_format == Export.Format.XLSX else _CsvFile)(part, headers_of(columns))
    written = 0
    try:
        for chunk in in_chunks(queryset, size=settings.EXPORT_CHUNK_ROWS):
            writer.write_rows(rows_of(chunk, columns))
            written += len(chunk)
            progress.advance(len(chunk))
        writer.close()
    except BaseException:
        writer.close()
        part.unlink(missing_ok=True)
        raise
    os.replace(part, directory / file_name)
    now = timezone.now()
    Export.objects.filter(pk=export.pk).update(
        file_name=file_name,
        rows=written,
        size_bytes=(directory / file_name).stat().st_size,
        finished_at=now,
        expires_at=now + timedelta(hours=settings.EXPORT_RETENTION_HOURS),
    )
    return {"rows": written, "download": export_download_url(export)}


def export_download_url(export: Export) -> str:
    if export.merchant_id:
        return reverse("merchant:export_download", args=[export.public_id])
    model_name = "payment" if export.kind == Export.Kind.PAYMENTS else "refund"
    return reverse(f"admin:payments_{model_name}_export_file", args=[export.public_id])


def export_file_response(export: Export) -> HttpResponseBase:
    """The export's file as a download; 409 while it is being written, 410 once it expired."""
    if not export.is_ready:
        return HttpResponse("This export is still being written.\n", status=409, content_type="text/plain")
    file_path = export_path(export.file_name)
    if (export.expires_at and export.expires_at <= timezone.now()) or not file_path.is_file():
        return HttpResponse("This export has expired: export the list again.\n", status=410, content_type="text/plain")
    content_type = XLSX_TYPE if export.file_format == Export.Format.XLSX else "text/csv; charset=utf-8"
    response = FileResponse(
        file_path.open("rb"), as_attachment=True, filename=export.download_name, content_type=content_type
    )
    response["Cache-Control"] = "private, no-store"
    return response


def expired_exports_before(cutoff: datetime) -> QuerySet:
    return Export.objects.filter(expires_at__lte=cutoff).order_by("expires_at").values_list("pk", flat=True)


def exports_delete(pks: list) -> int:
    """The exports' files, then their rows (a file whose row went first would never go)."""
    for file_name in Export.objects.filter(pk__in=pks).exclude(file_name="").values_list("file_name", flat=True):
        export_path(file_name).unlink(missing_ok=True)
    return Export.objects.filter(pk__in=pks).delete()[0]


def export_files_prune(*, now: datetime | None = None) -> int:
    """Remove expired exports, files and rows (an export that failed expires too); returns how
    many. The sweeper's retention pass does the same in batches (policy
    "payments.expired_exports", registered in PaymentsConfig.ready)."""
    return exports_delete(list(expired_exports_before(now or timezone.now())))
