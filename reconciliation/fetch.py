"""Downloading a settlement report from the processor service (docs/settlement-report.md)."""

import tempfile
from datetime import date

import requests
from django.conf import settings

from reconciliation.ingest import IngestResult, settlement_file_ingest
from reconciliation.models import SettlementFile

DOWNLOAD_CHUNK = 1 << 16
# Kept in memory up to this size, then spooled to disk: a million-line report never sits in memory.
SPOOL_BYTES = 8 << 20


class ReportNotReady(Exception):
    """The processor has no report for the day yet (404): the job retries later."""


def report_url(day: date) -> str:
    if not settings.PAYMENTS_PROCESSOR_URL:
        raise ValueError("PAYMENTS_PROCESSOR_URL is not set: there is no processor to fetch reports from.")
    return f"{settings.PAYMENTS_PROCESSOR_URL.rstrip('/')}/v1/settlements/{day.isoformat()}.csv"


def settlement_report_fetch(*, day: date, processor: str) -> IngestResult:
    """Download the day's report to a spooled temporary file and ingest it (idempotent: the
    same report again changes nothing). Raises on a network error or a non-200 answer."""
    url = report_url(day)
    with requests.get(url, stream=True, timeout=settings.PROCESSOR_TIMEOUT_SECONDS) as response:
        if response.status_code == 404:
            raise ReportNotReady(f"{url}: no report yet")
        response.raise_for_status()
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            for chunk in response.iter_content(DOWNLOAD_CHUNK):
                spool.write(chunk)
            spool.seek(0)
            return settlement_file_ingest(
                stream=spool,
                processor=processor,
                source=SettlementFile.Source.FETCH,
                filename=url.rsplit("/", 1)[-1],
                day=day,
            )
