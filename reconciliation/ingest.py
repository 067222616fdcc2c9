"""Ingestion of a settlement report: stage it with COPY, validate every line in SQL, keep each once.

Bounded memory: the file is read twice as a stream (once for its hash, once to split) and its
rows flow straight into PostgreSQL's COPY (as text, with their line numbers); nothing holds the
whole file. Python only splits the CSV (UTF-8, field count); every field is then checked by one
set-based query that names the bad lines. A broken file raises `ReportInvalid` listing them,
and its transaction rolls back: nothing changes.
"""

import csv
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from functools import cache
from typing import IO

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from iso4217 import Currency

from backoffice.services import audit_record
from payments.money import currency_exponent
from reconciliation.formats import FIELDS, ReportFormat, report_format
from reconciliation.models import SettlementFile

MAX_REPORTED_ERRORS = 50
OCCURRED_AT = FIELDS.index("occurred_at")
MAX_AMOUNT_MINOR = 10**15
MAX_TEXT = 100
READ_CHUNK = 1 << 20
WORK_MEM = "256MB"


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


class _Splitter:
    """Reads the CSV stream into staged rows (line number + our fields, as text) for COPY,
    recording only what SQL cannot see: bytes that are not UTF-8, unreadable CSV, a wrong
    number of fields. Every field is checked afterwards, set-based, in `VALIDATE_SQL`."""

    def __init__(self, fmt: ReportFormat):
        self.fmt = fmt
        self.errors: list[tuple[int, str]] = []
        self.error_count = 0
        self.rows = 0
        # The date of the first line with a valid time: the report's day unless the caller says.
        self.first_day: date | None = None

    def error(self, line_number: int, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append((line_number, message))

    def _note_day(self, occurred_at: str) -> None:
        try:
            self.first_day = self.fmt.parse_time(occurred_at).date()
        except ValueError:
            pass

    def _decoded(self, stream: IO[bytes]) -> Iterator[str]:
        # Line by line, so a byte that is not UTF-8 is reported on its own line.
        for number, raw in enumerate(stream, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.error(number, "not valid UTF-8 (reading stopped here)")
                return
            yield text.removeprefix("\ufeff") if number == 1 else text

    def chunks_for_copy(self, stream: IO[bytes]) -> Iterator[str]:
        """CSV text for COPY, a few thousand rows per chunk."""
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
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                self.error(reader.line_num, f"not valid CSV ({error})")
                continue
            line_number = reader.line_num
            if not row:
                self.error(line_number, "empty line")
            elif len(row) != width:
                self.error(line_number, f"{len(row)} fields where the header has {width}")
            else:
                values = [row[i].strip() for i in indexes]
                if self.first_day is None:
                    self._note_day(values[OCCURRED_AT])
                writer.writerow([line_number, *values])
                self.rows += 1
                if self.rows % 5000 == 0:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
        yield buffer.getvalue()


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
    charge_reference text, amount_minor text, currency text, occurred_at text
) ON COMMIT DROP
"""

# An empty field is an empty text, not NULL (csv's default), so every check compares text.
COPY_SQL = f"COPY reconciliation_staging FROM STDIN WITH (FORMAT csv, FORCE_NOT_NULL ({', '.join(FIELDS)}))"

# A time as the contract writes it (docs/settlement-report.md), checked without casting (a
# cast of a bad value would abort the statement): the shape, then each field's range, then
# the day of the month against the month's length.
TIME_SHAPE = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$"
TIME_VALID_SQL = f"""
CASE WHEN occurred_at !~ '{TIME_SHAPE}' THEN false
     WHEN substr(occurred_at, 1, 4) = '0000' OR substr(occurred_at, 6, 2)::int NOT BETWEEN 1 AND 12
       OR substr(occurred_at, 12, 2)::int > 23 OR substr(occurred_at, 15, 2)::int > 59
       OR substr(occurred_at, 18, 2)::int > 59 OR substr(occurred_at, 9, 2)::int < 1 THEN false
     ELSE substr(occurred_at, 9, 2)::int <= extract(day FROM make_date(substr(occurred_at, 1, 4)::int,
              substr(occurred_at, 6, 2)::int, 1) + interval '1 month - 1 day')
END"""


def _validate_sql(fmt: ReportFormat) -> str:
    """One pass over the staged lines: each bad line with every problem it has, as the Python
    validation said it (repr-like quotes come from format('%L'))."""
    column = fmt.columns
    ours = "(%(ours)s::text[])[array_position(%(theirs)s::text[], line_type)]"
    checks = [
        "CASE WHEN array_position(%(theirs)s::text[], line_type) IS NULL "
        "THEN format('unknown type %%s', quote_literal(left(line_type, 40))) END",
        "CASE WHEN line_id = '' THEN 'no line id' END",
    ]
    for name in ("line_id", "processor_reference", "idempotency_key", "charge_reference"):
        checks.append(
            f"CASE WHEN length({name}) > {MAX_TEXT} THEN '{column[name]} longer than {MAX_TEXT} characters' END"
        )
    for line_type, required in fmt.required.items():
        for name in required:
            checks.append(
                f"CASE WHEN {ours} = '{line_type}' AND {name} = '' THEN 'a {line_type} line needs {column[name]}' END"
            )
    checks += [
        f"CASE WHEN amount_minor !~ '^[0-9]{{1,{len(str(MAX_AMOUNT_MINOR)) - 1}}}$' OR amount_minor ~ '^0+$' "
        "THEN format('amount %%s is not a positive whole number of minor units', "
        "quote_literal(left(amount_minor, 20))) END",
        "CASE WHEN NOT currency = ANY(%(currencies)s::text[]) "
        "THEN format('currency %%s is not an ISO 4217 code', quote_literal(left(currency, 10))) END",
        f"CASE WHEN NOT ({TIME_VALID_SQL}) THEN format('%%s is not a UTC time like 2026-12-01T13:45:02.123456Z', "
        "quote_literal(left(occurred_at, 40))) "
        "WHEN substr(occurred_at, 1, 10) <> %(day)s "
        "THEN format('occurred on %%s, not on the report''s day %%s', substr(occurred_at, 1, 10), %(day)s) END",
    ]
    return f"""
WITH judged AS (
    SELECT line_number, concat_ws('; ', {", ".join(checks)}) AS problems FROM reconciliation_staging
)
SELECT line_number, problems, count(*) OVER () FROM judged WHERE problems <> '' ORDER BY line_number LIMIT %(limit)s
"""  # noqa: S608 (constants from the format)


@cache
def _known_currencies() -> list[str]:
    known = []
    for code in Currency.__members__:
        try:
            currency_exponent(code)
        except ValidationError:
            continue
        if len(code) == 3 and code.isupper():
            known.append(code)
    return known


# Lines already known (same processor, same line id, same occurrence) are kept as they were:
# an overlapping or corrected download adds only what is new. Ids follow the file's order, so
# "the earlier line" (what a duplicate repeats) is the one that came first.
KEEP_SQL = """
INSERT INTO reconciliation_settlementline
    (file_id, processor, line_id, occurrence, line_number, line_type, processor_reference, idempotency_key,
     charge_reference, amount_minor, currency, occurred_at, day, outcome, linked_by_hand, note)
SELECT %(file_id)s, %(processor)s, line_id, row_number() OVER (PARTITION BY line_id ORDER BY line_number),
       line_number, (%(ours)s::text[])[array_position(%(theirs)s::text[], line_type)], processor_reference,
       idempotency_key, charge_reference, amount_minor::bigint, currency, occurred_at::timestamptz, %(day)s, '',
       false, ''
  FROM reconciliation_staging
 ORDER BY line_number
ON CONFLICT ON CONSTRAINT settlement_line_once_per_processor DO NOTHING
"""


def _staged_errors(cursor, fmt: ReportFormat, splitter: _Splitter, day: date | None) -> tuple[list, int]:
    """The first bad lines in file order (the splitter's and the set-based checks'), and how many."""
    errors, total = list(splitter.errors), splitter.error_count
    if splitter.rows:
        params = {
            "theirs": list(fmt.line_types),
            "ours": list(fmt.line_types.values()),
            "currencies": _known_currencies(),
            "day": day.isoformat() if day else "",  # no valid time at all: every line says so
            "limit": MAX_REPORTED_ERRORS,
        }
        cursor.execute(_validate_sql(fmt), params)
        found = cursor.fetchall()
        errors += [(number, problems) for number, problems, _ in found]
        total += found[0][2] if found else 0
    return sorted(errors, key=lambda error: error[0])[:MAX_REPORTED_ERRORS], total


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
    splitter = _Splitter(fmt)
    stream.seek(0)
    with transaction.atomic():
        with connection.cursor() as cursor:
            # ON COMMIT DROP is not enough inside a caller's transaction (a test, a batch).
            cursor.execute("DROP TABLE IF EXISTS reconciliation_staging")
            # Numbering repeated line ids sorts the whole file: in memory, not in temporary files.
            cursor.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
            cursor.execute(STAGING_SQL)
            cursor.copy_expert(
                COPY_SQL,
                _IteratorReader(splitter.chunks_for_copy(stream)),
                READ_CHUNK,
            )
            day = day or splitter.first_day
            errors, total = _staged_errors(cursor, fmt, splitter, day)
            if total:
                raise ReportInvalid(errors, total)
            if day is None:
                raise ReportInvalid([(1, "the report has no lines: say which day it covers")], 1)
            # A concurrent upload of the same bytes loses here on the unique hash and rolls back.
            settlement_file = SettlementFile.objects.create(
                processor=processor,
                day=day,
                sha256=sha256,
                source=source,
                filename=filename[:255],
                size_bytes=size,
                line_count=splitter.rows,
                new_line_count=0,
                ingested_by=actor if getattr(actor, "pk", None) else None,
            )
            cursor.execute(
                KEEP_SQL,
                {
                    "file_id": settlement_file.pk, "processor": processor, "day": day,
                    "theirs": list(fmt.line_types), "ours": list(fmt.line_types.values()),
                },
            )  # fmt: skip
            settlement_file.new_line_count = cursor.rowcount
            cursor.execute("DROP TABLE reconciliation_staging")
            settlement_file.save(update_fields=["new_line_count"])
        audit_record(
            actor=actor,
            action="settlement_file_ingest",
            target=settlement_file,
            details={"sha256": sha256, "lines": splitter.rows, "new_lines": settlement_file.new_line_count},
        )
    return IngestResult(file=settlement_file, created=True)
