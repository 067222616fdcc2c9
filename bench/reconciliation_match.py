"""Reconciliation at scale: ingest and match one processor day of about a million report lines.

    .venv/bin/python bench/reconciliation_match.py [--lines 1000000] [--chunk 50000]

Makes, in a database of its own (DATABASE_URL's name + _bench): succeeded payments of one day
with their attempts and 5% refunds (written with INSERT ... SELECT generate_series), and the
processor's report of that day per docs/settlement-report.md (written with COPY ... TO, a
charge and a fee line per payment, a refund line per refund, the payouts), with a few lies
of each kind. Then, in this one process:

- ingest: `settlement_file_ingest` of the file (hash, validate every line, COPY, keep), against
  the baseline of a bare COPY of the same file into an unindexed table (what moving the bytes
  into PostgreSQL costs with no checks at all);
- match: `match_day` (every chunk classified, exceptions opened, our records checked), against
  the baseline of one join of the day's charge lines with the attempts by key.

Prints lines/s, the ratios, this process's peak memory (ru_maxrss) after each phase, and
checks that the exceptions found are exactly the lies injected. Deletes what it made.
"""

import argparse
import os
import resource
import secrets
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import bench_database_url, configure  # noqa: E402

PROCESSOR = "simulated"
# One lie of a kind every this many payments (primes, so the kinds do not fall on one payment).
AMOUNT_EVERY, FEE_EVERY, MISSING_EVERY, DUPLICATE_EVERY = 10007, 10009, 10037, 10039

PAYMENTS_SQL = """
INSERT INTO payments_payment (merchant_id, public_id, amount_minor, currency, status, payment_method,
    merchant_reference, customer_email, description, idempotency_key, needs_review, created_at, updated_at)
SELECT %(merchant)s, 'pay_' || %(token)s || g, 100 + (g::bigint * 7919) %% 500000,
       (ARRAY['EUR', 'USD', 'GBP'])[1 + g %% 3], 'succeeded', 'tok_success', '', '', '',
       %(token)s || '-' || g, false, now(), now()
  FROM generate_series(1, %(payments)s) g
"""
ATTEMPTS_SQL = """
INSERT INTO payments_paymentattempt (payment_id, number, idempotency_key, outcome, gateway_reference, error_code,
    error_message, lookups, created_at, completed_at)
SELECT p.id, 1, p.public_id || '_a1', 'succeeded', 'ch_' || p.public_id, '', '', 0, now(),
       %(start)s::timestamptz + (p.id %% 86000) * interval '1 second' + interval '1 second'
  FROM payments_payment p WHERE p.merchant_id = %(merchant)s
"""
REFUNDS_SQL = """
INSERT INTO payments_refund (payment_id, public_id, amount_minor, reason, status, requested_by_id, needs_approval,
    decision_note, gateway_reference, error_code, error_message, created_at, completed_at, updated_at)
SELECT p.id, 're_' || p.public_id, p.amount_minor / 2 + 1, 'bench', 'succeeded', %(user)s, false, '',
       'rf_' || p.public_id, '', '', now(), a.completed_at + interval '1 millisecond', now()
  FROM payments_payment p JOIN payments_paymentattempt a ON a.payment_id = p.id
 WHERE p.merchant_id = %(merchant)s AND p.id %% 20 = 0
"""
REPORT_SQL = f"""
COPY (
WITH lines AS (
    SELECT 'sl_' || %(token)s || 'c' || a.id AS line_id, 'charge' AS type, a.gateway_reference AS reference,
           a.idempotency_key AS key, '' AS charge_reference,
           p.amount_minor + CASE WHEN a.id %% {AMOUNT_EVERY} = 0 THEN 1 ELSE 0 END AS amount, p.currency,
           a.completed_at AS at
      FROM payments_paymentattempt a JOIN payments_payment p ON p.id = a.payment_id
     WHERE p.merchant_id = %(merchant)s AND a.id %% {MISSING_EVERY} <> 0
    UNION ALL
    SELECT 'sl_' || %(token)s || 'd' || a.id, 'charge', a.gateway_reference, a.idempotency_key, '', p.amount_minor,
           p.currency, a.completed_at
      FROM payments_paymentattempt a JOIN payments_payment p ON p.id = a.payment_id
     WHERE p.merchant_id = %(merchant)s AND a.id %% {DUPLICATE_EVERY} = 0
    UNION ALL
    SELECT 'sl_' || %(token)s || 'f' || a.id, 'fee', 'fe_' || p.public_id, '', a.gateway_reference,
           (p.amount_minor * %(bps)s + 5000) / 10000 + %(fixed)s + CASE WHEN a.id %% {FEE_EVERY} = 0 THEN 3 ELSE 0 END,
           p.currency, a.completed_at
      FROM payments_paymentattempt a JOIN payments_payment p ON p.id = a.payment_id
     WHERE p.merchant_id = %(merchant)s AND a.id %% {MISSING_EVERY} <> 0
    UNION ALL
    SELECT 'sl_' || %(token)s || 'r' || r.id, 'refund', r.gateway_reference, r.public_id, 'ch_' || p.public_id,
           r.amount_minor, p.currency, r.completed_at
      FROM payments_refund r JOIN payments_payment p ON p.id = r.payment_id
     WHERE p.merchant_id = %(merchant)s
)
SELECT line_id, type, reference AS processor_reference, key AS idempotency_key, charge_reference,
       amount AS amount_minor, currency, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS occurred_at
  FROM (SELECT * FROM lines
        UNION ALL
        SELECT 'sl_' || %(token)s || 'p' || currency, 'payout', 'po_' || %(token)s || currency, '', '',
               sum(CASE WHEN type = 'charge' THEN amount ELSE -amount END), currency,
               %(start)s::timestamptz + interval '86399 seconds'
          FROM lines GROUP BY currency) everything
 ORDER BY 8, 1
) TO STDOUT WITH (FORMAT csv, HEADER)
"""
HEADER = "line_id,type,processor_reference,idempotency_key,charge_reference,amount_minor,currency,occurred_at"


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="about this many report lines")
    parser.add_argument("--chunk", type=int, default=50_000, help="RECONCILIATION_CHUNK_LINES")
    options = parser.parse_args()
    os.environ["RECONCILIATION_CHUNK_LINES"] = str(options.chunk)
    configure(database_url=bench_database_url(os.environ.get("DATABASE_URL")), redis_url="redis://127.0.0.1:1/0")

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection

    from payments.models import Merchant
    from reconciliation.ingest import settlement_file_ingest
    from reconciliation.matching import day_bounds, match_day
    from reconciliation.models import Discrepancy, SettlementFile, SettlementLine

    token = secrets.token_hex(4)
    # A day of its own, long enough ago for missing records to be flagged.
    day = date(2001, 1, 1) + timedelta(days=secrets.randbelow(3000))
    payments = int(options.lines / 2.05)
    merchant = Merchant.objects.create(name=f"bench-{token}", slug=f"bench-{token}", contact_email="b@example.com")
    user = get_user_model().objects.create(username=f"bench-{token}")
    start, _ = day_bounds(day)
    params = {
        "merchant": merchant.pk, "token": token, "payments": payments, "user": user.pk, "start": start,
        "bps": settings.PROCESSOR_FEE_BPS, "fixed": settings.PROCESSOR_FEE_FIXED_MINOR,
    }  # fmt: skip
    report = tempfile.TemporaryFile()
    try:
        began = time.perf_counter()
        with connection.cursor() as cursor:
            for statement in (PAYMENTS_SQL, ATTEMPTS_SQL, REFUNDS_SQL):
                cursor.execute(statement, params)
            cursor.execute("ANALYZE payments_payment; ANALYZE payments_paymentattempt; ANALYZE payments_refund")
            cursor.copy_expert(cursor.mogrify(REPORT_SQL, params).decode(), report)
            cursor.execute(
                f"SELECT count(*) FILTER (WHERE a.id %% {AMOUNT_EVERY} = 0 AND a.id %% {MISSING_EVERY} <> 0),"
                f" count(*) FILTER (WHERE a.id %% {FEE_EVERY} = 0 AND a.id %% {MISSING_EVERY} <> 0),"
                f" count(*) FILTER (WHERE a.id %% {MISSING_EVERY} = 0),"
                f" count(*) FILTER (WHERE a.id %% {DUPLICATE_EVERY} = 0 AND a.id %% {MISSING_EVERY} <> 0)"
                " FROM payments_paymentattempt a JOIN payments_payment p ON p.id = a.payment_id"
                " WHERE p.merchant_id = %s",
                [merchant.pk],
            )
            amount_lies, fee_lies, missing, duplicates = cursor.fetchone()
        size = report.tell()
        report.seek(0)
        line_count = sum(1 for _ in report) - 1
        print(f"generated {payments:,} payments and a report of {line_count:,} lines ({size / 2**20:.0f} MiB) "
              f"in {time.perf_counter() - began:.0f} s")  # fmt: skip
        report.seek(0)
        assert report.readline().decode().strip() == HEADER

        # Baseline: the bytes into PostgreSQL, no checks, no indexes.
        report.seek(0)
        began = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE TEMPORARY TABLE bench_raw (a text, b text, c text, d text, e text, f text, g text, h text)"
            )
            cursor.copy_expert("COPY bench_raw FROM STDIN WITH (FORMAT csv, HEADER)", report)
            cursor.execute("DROP TABLE bench_raw")
        raw_copy = time.perf_counter() - began

        memory_before = peak_mib()
        report.seek(0)
        began = time.perf_counter()
        result = settlement_file_ingest(stream=report, processor=PROCESSOR, source="upload", filename="bench.csv")
        ingest = time.perf_counter() - began
        memory_ingest = peak_mib()
        assert result.created and result.file.line_count == line_count

        began = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM reconciliation_settlementline l JOIN payments_paymentattempt a"
                " ON a.idempotency_key = l.idempotency_key WHERE l.processor = %s AND l.day = %s"
                " AND l.line_type = 'charge'",
                [PROCESSOR, day],
            )
            cursor.fetchone()
        join = time.perf_counter() - began

        began = time.perf_counter()
        progress = match_day(processor=PROCESSOR, day=day)
        match = time.perf_counter() - began
        memory_match = peak_mib()

        found = {
            kind: Discrepancy.objects.filter(processor=PROCESSOR, day=day, kind=kind, status="open").count()
            for kind in ("amount_mismatch", "fee_mismatch", "missing_theirs", "duplicate")
        }
        expected = {
            "amount_mismatch": amount_lies, "fee_mismatch": fee_lies, "missing_theirs": missing,
            "duplicate": duplicates,
        }  # fmt: skip
        others = Discrepancy.objects.filter(processor=PROCESSOR, day=day).exclude(kind__in=list(found)).count()
        print(f"ingest: {ingest:6.1f} s  {line_count / ingest:9,.0f} lines/s   "
              f"(bare COPY {raw_copy:.1f} s: ingest/COPY = {ingest / raw_copy:.1f}x)")  # fmt: skip
        print(f"match:  {match:6.1f} s  {progress.total / match:9,.0f} lines/s   "
              f"(one join by key {join:.1f} s: match/join = {match / join:.1f}x)")  # fmt: skip
        print(f"ingest + match: {ingest + match:.0f} s for {line_count:,} lines (aim: under 300 s)")
        print(f"peak memory of this process: {memory_before:.0f} MiB before ingesting, {memory_ingest:.0f} after "
              f"ingesting, {memory_match:.0f} after matching (chunk {options.chunk:,} lines)")  # fmt: skip
        print(f"exceptions found {found}, injected {expected}, others {others}")
        if found != expected or others:
            sys.exit("bench: the exceptions found are not exactly the lies injected")
    finally:
        report.close()
        with connection.cursor() as cursor:
            files = list(SettlementFile.objects.filter(processor=PROCESSOR, day=day).values_list("pk", flat=True))
            Discrepancy.objects.filter(processor=PROCESSOR, day=day).delete()
            SettlementLine.objects.filter(file__in=files).delete()
            SettlementFile.objects.filter(pk__in=files).delete()
            cursor.execute("DELETE FROM reconciliation_matchingrun WHERE day = %s", [day])
            cursor.execute("DELETE FROM backoffice_auditentry WHERE action = 'settlement_file_ingest'"
                           " AND object_id = ANY(%s)", [[str(pk) for pk in files]])  # fmt: skip
            # The lines' keys to attempts and refunds have no index (matching updates them in place);
            # deleting attempts checks them by scanning the lines table, which must be empty of
            # dead rows first.
            cursor.execute("VACUUM reconciliation_settlementline")
            for table in ("payments_refund", "payments_paymentattempt"):
                cursor.execute(
                    f"DELETE FROM {table} WHERE payment_id IN (SELECT id FROM payments_payment WHERE merchant_id = %s)",
                    [merchant.pk],
                )
            cursor.execute("DELETE FROM payments_payment WHERE merchant_id = %s", [merchant.pk])
        merchant.delete()
        user.delete()


if __name__ == "__main__":
    main()
