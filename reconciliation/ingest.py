"""Ingestion of a settlement report: validate every line, stage it with COPY, keep each line once.

Bounded memory: the file is read twice as a stream (once for its hash, once to parse) and the
parsed lines flow straight into PostgreSQL's COPY; nothing holds the whole file. A broken file
raises `ReportInvalid` listing the bad lines, and its transaction rolls back: nothing changes.
"""

import csv
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import IO

from django.core.exceptions import ValidationError
from django.db import connection, transaction

from backoffice.services import audit_record
from payments.money import currency_exponent
from reconciliation.formats import FIELDS, ReportFormat, report_format
from reconciliation.models import SettlementFile

MAX_REPORTED_ERRORS = 50
MAX_AMOUNT_MINOR = 10**15
MAX_TEXT = 100
READ_CHUNK = 1 << 20


class ReportInvalid(ValidationError):
    """The file cannot be ingested; `errors` holds (line number, message) pairs."""

    def __init__(self, errors: list[tuple[int, str]], total: int):
        self.line_errors = errors
        self.total = total
        shown = [f"line {number}: {message}" for number, message in errors]
        more = f" (and {total - len(errors)} more)" if total > len(errors) else ""
        super().__init__(
            f"The report was not ingested: {total} bad line(s){more}. " + "; ".join(shown), code="report_invalid"
        )


@dataclass(frozen=True)
class IngestResult:
    file: SettlementFile
    created: bool  # False: this exact file was ingested before and nothing changed


def file_sha256(stream: IO[bytes]) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    stream.seek(0)
    while chunk := stream.read(READ_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    stream.seek(0)
    return digest.hexdigest(), size


def _copy_text(value) -> str:
    # COPY's text format: backslash, tab and line ends are escaped; validated fields carry none
    # of them, but a line id is free text.
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


class _Validator:
    """Turns a CSV stream into staged rows, recording every bad line instead of stopping."""

    def __init__(self, fmt: ReportFormat, day: date | None):
        self.fmt = fmt
        self.day = day
        self.errors: list[tuple[int, str]] = []
        self.error_count = 0
        self.rows = 0
        self._currencies: dict[str, bool] = {}

    def error(self, line_number: int, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append((line_number, message))

    def _currency_ok(self, code: str) -> bool:
        known = self._currencies.get(code)
        if known is None:
            try:
                currency_exponent(code)
                known = len(code) == 3 and code.isupper()
            except ValidationError:
                known = False
            self._currencies[code] = known
        return known

    def _decoded(self, stream: IO[bytes]) -> Iterator[str]:
        # Line by line, so a byte that is not UTF-8 is reported on its own line.
        for number, raw in enumerate(stream, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.error(number, "not valid UTF-8 (reading stopped here)")
                return
            yield text.removeprefix("\ufeff") if number == 1 else text

    def rows_for_copy(self, stream: IO[bytes]) -> Iterator[str]:
        reader = csv.reader(self._decoded(stream))
        try:
            header = next(reader, None)
        except csv.Error as error:
            self.error(1, f"unreadable header ({error})")
            return
        if header is None:
            self.error(1, "the file is empty (no header line)")
            return
        position = {}
        for ours, theirs in self.fmt.columns.items():
            if header.count(theirs) != 1:
                self.error(1, f"the header needs exactly one column {theirs!r}")
            else:
                position[ours] = header.index(theirs)
        if self.error_count:
            return
        width = len(header)
        indexes = [position[name] for name in FIELDS]
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                self.error(reader.line_num, f"not valid CSV ({error})")
                continue
            line_number = reader.line_num
            if not row:
                self.error(line_number, "empty line")
                continue
            if len(row) != width:
                self.error(line_number, f"{len(row)} fields where the header has {width}")
                continue
            values = dict(zip(FIELDS, (row[i].strip() for i in indexes), strict=True))
            staged = self._check(line_number, values)
            if staged is not None:
                self.rows += 1
                yield staged

    def _check(self, line_number: int, values: dict) -> str | None:
        problems = []
        line_type = self.fmt.line_types.get(values["line_type"])
        if line_type is None:
            problems.append(f"unknown type {values['line_type'][:40]!r}")
        if not values["line_id"]:
            problems.append("no line id")
        for name in ("line_id", "processor_reference", "idempotency_key", "charge_reference"):
            if len(values[name]) > MAX_TEXT:
                problems.append(f"{self.fmt.columns[name]} longer than {MAX_TEXT} characters")
        for name in self.fmt.required.get(line_type or "", ()):
            if not values[name]:
                problems.append(f"a {line_type} line needs {self.fmt.columns[name]}")
        amount = values["amount_minor"]
        if not amount.isascii() or not amount.isdigit() or int(amount) <= 0 or int(amount) >= MAX_AMOUNT_MINOR:
            problems.append(f"amount {amount[:20]!r} is not a positive whole number of minor units")
        if not self._currency_ok(values["currency"]):
            problems.append(f"currency {values['currency'][:10]!r} is not an ISO 4217 code")
        occurred_at: datetime | None = None
        try:
            occurred_at = self.fmt.parse_time(values["occurred_at"])
        except ValueError as error:
            problems.append(str(error)[:120])
        if occurred_at is not None:
            if self.day is None:
                self.day = occurred_at.date()
            elif occurred_at.date() != self.day:
                problems.append(f"occurred on {occurred_at.date()}, not on the report's day {self.day}")
        if problems or occurred_at is None:  # (no time: a problem says why)
            self.error(line_number, "; ".join(problems))
            return None
        fields = [line_number, values["line_id"], line_type, values["processor_reference"], values["idempotency_key"]]
        fields += [values["charge_reference"], int(amount), values["currency"], occurred_at.isoformat()]
        return "\t".join(_copy_text(value) for value in fields) + "\n"


class _IteratorReader(io.RawIOBase):
    """A read()-able file over an iterator of text chunks, for psycopg2's copy_expert."""

    def __init__(self, chunks: Iterator[str]):
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        parts, length = [self._pending], len(self._pending)
        while size < 0 or length < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            encoded = chunk.encode()
            parts.append(encoded)
            length += len(encoded)
        buffer = b"".join(parts)
        if size < 0:
            self._pending = b""
            return buffer
        self._pending = buffer[size:]
        return buffer[:size]


STAGING_SQL = """
CREATE TEMPORARY TABLE reconciliation_staging (
    line_number integer, line_id text, line_type text, processor_reference text, idempotency_key text,
    charge_reference text, amount_minor bigint, currency text, occurred_at timestamptz
) ON COMMIT DROP
"""

# Lines already known (same processor, same line id, same occurrence) are kept as they were:
# an overlapping or corrected download adds only what is new. Ids follow the file's order, so
# "the earlier line" (what a duplicate repeats) is the one that came first.
KEEP_SQL = """
INSERT INTO reconciliation_settlementline
    (file_id, processor, line_id, occurrence, line_number, line_type, processor_reference, idempotency_key,
     charge_reference, amount_minor, currency, occurred_at, day, outcome, linked_by_hand, note)
SELECT %(file_id)s, %(processor)s, line_id, row_number() OVER (PARTITION BY line_id ORDER BY line_number),
       line_number, line_type, processor_reference, idempotency_key, charge_reference, amount_minor, currency,
       occurred_at, %(day)s, '', false, ''
  FROM reconciliation_staging
 ORDER BY line_number
ON CONFLICT ON CONSTRAINT settlement_line_once_per_processor DO NOTHING
"""


def settlement_file_ingest(
    *,
    stream: IO[bytes],
    processor: str,
    source: str,
    filename: str = "",
    day: date | None = None,
    actor=None,
) -> IngestResult:
    """Ingest one report file in one transaction: the same bytes twice change nothing; one bad
    line refuses the whole file (`ReportInvalid`, with line numbers) and changes nothing."""
    if connection.vendor != "postgresql":
        raise ValidationError("Reconciliation needs PostgreSQL (it stages reports with COPY).")
    fmt = report_format(processor)
    sha256, size = file_sha256(stream)
    existing = SettlementFile.objects.filter(processor=processor, sha256=sha256).first()
    if existing is not None:
        return IngestResult(file=existing, created=False)
    validator = _Validator(fmt, day)
    stream.seek(0)
    with transaction.atomic():
        with connection.cursor() as cursor:
            # ON COMMIT DROP is not enough inside a caller's transaction (a test, a batch).
            cursor.execute("DROP TABLE IF EXISTS reconciliation_staging")
            cursor.execute(STAGING_SQL)
            cursor.copy_expert(
                "COPY reconciliation_staging FROM STDIN WITH (FORMAT text)",
                _IteratorReader(validator.rows_for_copy(stream)),
                READ_CHUNK,
            )
            if validator.error_count:
                raise ReportInvalid(validator.errors, validator.error_count)
            if validator.day is None:
                raise ReportInvalid([(1, "the report has no lines: say which day it covers")], 1)
            # A concurrent upload of the same bytes loses here on the unique hash and rolls back.
            settlement_file = SettlementFile.objects.create(
                processor=processor,
                day=validator.day,
                sha256=sha256,
                source=source,
                filename=filename[:255],
                size_bytes=size,
                line_count=validator.rows,
                new_line_count=0,
                ingested_by=actor if getattr(actor, "pk", None) else None,
            )
            cursor.execute(KEEP_SQL, {"file_id": settlement_file.pk, "processor": processor, "day": validator.day})
            settlement_file.new_line_count = cursor.rowcount
            cursor.execute("DROP TABLE reconciliation_staging")
            settlement_file.save(update_fields=["new_line_count"])
        audit_record(
            actor=actor,
            action="settlement_file_ingest",
            target=settlement_file,
            details={"sha256": sha256, "lines": validator.rows, "new_lines": settlement_file.new_line_count},
        )
    return IngestResult(file=settlement_file, created=True)
