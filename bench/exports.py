"""A large export as the background job writes it, against PostgreSQL's own COPY of the same
rows, in one process.

    nice -n 10 .venv/bin/python bench/exports.py [--rows 100000] [--format csv]

Seeds N succeeded payments (each with its attempt and processor reference, by SQL) under a
merchant of its own in <DATABASE_URL's name>_bench, then:
  baseline  COPY (SELECT the payment columns) TO STDOUT as CSV: what PostgreSQL alone takes;
  export    payments.services.exports.export_write of an admin export of that merchant's
            payments (the ChangeList rebuilt for a superuser, keyset chunks of
            EXPORT_CHUNK_ROWS, refunded / fee / processor reference read per row);
and prints both times, the ratio, rows/s, the export's CPU seconds in this process (what a
loaded machine does not inflate), the file's size and the process's peak memory
before and after the export (it stays flat when rows are written as they are read). Deletes
what it made.
"""

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Batch, bench_database_url, configure  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def seed(batch: Batch, rows: int) -> None:
    """N succeeded payments, each with one attempt carrying a processor reference, in two
    INSERT ... SELECT statements (the ORM would take minutes for a million)."""
    from django.db import connection

    merchant, prefix = int(batch.merchant.pk), batch.merchant.slug
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO payments_payment (public_id, amount_minor, currency, status, payment_method, "
            "merchant_reference, customer_email, description, idempotency_key, needs_review, created_at, "
            "updated_at, merchant_id) "
            "SELECT %s || n, 1000 + n %% 9000, 'EUR', 'succeeded', 'tok_success', 'order-' || n, "
            "'c' || n || '@example.com', '', %s || n, false, now(), now(), %s FROM generate_series(1, %s) n",
            [f"pay_{prefix}_", f"{prefix}-", merchant, rows],
        )
        cursor.execute(
            "INSERT INTO payments_paymentattempt (number, idempotency_key, outcome, gateway_reference, error_code, "
            "error_message, lookups, created_at, payment_id) "
            "SELECT 1, idempotency_key || '-a1', 'succeeded', 'ch_' || id, '', '', 0, now(), id "
            "FROM payments_payment WHERE merchant_id = %s",
            [merchant],
        )
        cursor.execute("ANALYZE payments_payment; ANALYZE payments_paymentattempt")


class _Discard:
    """COPY's output counted and dropped: kept in memory it would set the peak the export is judged by."""

    def __init__(self):
        self.size = 0

    def write(self, data) -> int:
        self.size += len(data)
        return len(data)


def copy_baseline(batch: Batch) -> float:
    from django.db import connection

    sink = _Discard()
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.copy_expert(
            "COPY (SELECT p.public_id, p.created_at, p.merchant_reference, p.status, p.currency, p.amount_minor, "
            "a.gateway_reference, p.customer_email, p.description FROM payments_payment p "
            "LEFT JOIN payments_paymentattempt a ON a.payment_id = p.id "
            f"WHERE p.merchant_id = {int(batch.merchant.pk)} ORDER BY p.id DESC) TO STDOUT WITH CSV HEADER",
            sink,
        )
    return time.perf_counter() - started


def export_once(batch: Batch, file_format: str) -> tuple[float, int, int]:
    from django.contrib.auth import get_user_model

    from payments.models import Export
    from payments.services.exports import export_path, export_write

    user = get_user_model().objects.create_superuser(f"{batch.merchant.slug}-su", password=None)
    export = Export.objects.create(
        kind=Export.Kind.PAYMENTS,
        file_format=file_format,
        query={"merchant__id__exact": [str(batch.merchant.pk)]},
        requested_by=user,
    )
    started, cpu_started = time.perf_counter(), cpu_seconds()
    result = export_write(export_id=export.pk)
    seconds = time.perf_counter() - started
    print(f"export CPU time {cpu_seconds() - cpu_started:8.1f} s in this process (the rest: PostgreSQL, waiting)")
    export.refresh_from_db()
    size = export.size_bytes
    export_path(export.file_name).unlink()
    export.delete()
    user.delete()
    return seconds, result["rows"], size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--format", choices=["csv", "xlsx"], default="csv")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    os.environ.setdefault("EXPORT_DIR", tempfile.mkdtemp(prefix="paydesk-export-bench-"))
    database_url = bench_database_url(args.database_url or os.environ.get("DATABASE_URL"))
    configure(database_url=database_url, redis_url=os.environ.get("REDIS_URL", ""))

    from django.conf import settings

    batch = Batch.start("exports")
    try:
        started = time.perf_counter()
        seed(batch, args.rows)
        print(f"seeded {args.rows:,} payments in {time.perf_counter() - started:.0f} s")
        baseline = copy_baseline(batch)
        before = peak_rss_mb()
        seconds, rows, size = export_once(batch, args.format)
        after = peak_rss_mb()
        print(f"COPY baseline   {baseline:8.1f} s")
        print(
            f"export ({args.format})    {seconds:8.1f} s  = {seconds / baseline:.1f}x the baseline, "
            f"{rows / seconds:,.0f} rows/s, {rows:,} rows, {size / 1e6:.0f} MB, "
            f"chunks of {settings.EXPORT_CHUNK_ROWS:,}"
        )
        print(f"peak memory     {before:8.0f} MB before the export, {after:.0f} MB after")
    finally:
        batch.delete()


if __name__ == "__main__":
    main()
