"""Payments imported from a CSV file (the payments list's "Import payments" page): the whole
file is checked in the request (one bad line refuses the file and nothing is written), then
one Job creates the payments in chunks with payments_create_many (bulk writes, one Redis
pipeline per chunk), its progress on its page. Each line's idempotency key makes a retried or
re-uploaded import create nothing twice."""

import csv
import io
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction

from backoffice.models import Job
from backoffice.progress import job_progress
from backoffice.services import audit_record, job_enqueue
from payments.errors import PaymentError
from payments.models import Merchant
from payments.money import parse_major_amount
from payments.services import payments_create_many
from payments.validators import contains_card_number, validate_new_payment

IMPORT_JOB = "payments.imports.payments_import_run"
REQUIRED_COLUMNS = ("amount", "currency", "payment_method", "idempotency_key")
OPTIONAL_COLUMNS = ("merchant_reference", "customer_email", "description")
MAX_LINES = 20_000


class ImportInvalid(Exception):
    """The file is refused: every (line number, message), none of them echoing a card number."""

    def __init__(self, line_errors: list[tuple[int, str]]):
        super().__init__(f"{len(line_errors)} bad line(s)")
        self.line_errors = line_errors


def payments_import_parse(stream, *, merchant: Merchant) -> list[dict]:
    """The file's payments as payments_create_many items, or ImportInvalid listing every bad
    line. Amounts in major units (12.34), checked against the currency, as the add form does."""
    try:
        text = stream.read().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ImportInvalid([(0, "The file is not UTF-8 text.")]) from error
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    unknown = [name for name in header if name not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if missing or unknown:
        problems = [f"missing column(s): {', '.join(missing)}"] if missing else []
        problems += [f"unknown column(s): {', '.join(unknown)}"] if unknown else []
        raise ImportInvalid(
            [(1, "; ".join(problems) + f". Columns: {', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}.")]
        )
    reader.fieldnames = header
    items: list[dict] = []
    errors: list[tuple[int, str]] = []
    keys: dict[str, int] = {}
    for number, row in enumerate(reader, start=2):
        if number - 1 > MAX_LINES:
            raise ImportInvalid([(number, f"More than {MAX_LINES} payments: split the file.")])
        item, problems = _item(row, merchant)
        key = item.get("idempotency_key") or ""
        if key and key in keys:
            problems.append(f"idempotency_key: the same key as line {keys[key]}.")
        if key:
            keys.setdefault(key, number)
        errors += [(number, problem) for problem in problems]
        items.append(item)
    if not items and not errors:
        errors.append((2, "The file holds no payments."))
    if errors:
        raise ImportInvalid(errors)
    return items


def _item(row: dict, merchant: Merchant) -> tuple[dict[str, Any], list[str]]:
    if None in row:  # more cells than columns
        return {}, ["more cells than the header has columns."]
    cells = {name: (value or "").strip() for name, value in row.items()}
    # Never echoed: a card number anywhere refuses the line, wherever it was typed.
    carded = [name for name, value in cells.items() if contains_card_number(value)]
    if carded:
        return {}, [f"{', '.join(carded)}: card numbers are never accepted; use a payment method token."]
    item: dict[str, Any] = {name: cells.get(name, "") for name in REQUIRED_COLUMNS[1:] + OPTIONAL_COLUMNS}
    try:
        item["amount_minor"] = parse_major_amount(cells["amount"], item["currency"])
    except ValidationError as error:
        return item, [f"amount: {message}" for message in error.messages]
    try:
        validate_new_payment(merchant=merchant, **item)
    except PaymentError as error:
        return item, [f"{field}: {message}" for field, messages in error.message_dict.items() for message in messages]
    return item, []


def payments_import_enqueue(*, merchant: Merchant, items: list[dict], actor, filename: str) -> Job:
    """Audit the import and write its Job, in one transaction."""
    with transaction.atomic():
        audit_record(
            actor=actor, action="payments_import", target=merchant, reason=f"{len(items)} payments from {filename}"
        )
        return job_enqueue(
            func=IMPORT_JOB,
            kwargs={"merchant_id": merchant.pk, "items": items, "actor_id": getattr(actor, "pk", None)},
            queue="default",
            concerns=merchant,
            requested_by=actor,
            max_attempts=3,  # it resumes after its last committed chunk
        )


def payments_import_run(*, merchant_id: int, items: list[dict], actor_id) -> dict:
    """The import's Job: payments_create_many chunk by chunk, progress per chunk."""
    merchant = Merchant.objects.get(pk=merchant_id)
    actor = get_user_model().objects.filter(pk=actor_id).first() if actor_id is not None else None
    progress = job_progress(total=len(items))
    size = settings.BULK_ACTION_CHUNK_SIZE
    for start in range(progress.done, len(items), size):
        with transaction.atomic():
            payments = payments_create_many(merchant=merchant, items=items[start : start + size], actor=actor)
            progress.record(done=[payment.public_id for payment in payments])
    return progress.summary()
