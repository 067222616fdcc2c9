"""What the ledger costs: the SQL statements and milliseconds its capture posting adds to a
payment's success (measured against the same step with the ledger's receiver disconnected,
in the same process), and reading a merchant's balance when its accounts hold a million
entries (kept running totals against summing the entries).

Same database as the other benches (DATABASE_URL's server, database <name>_bench); deletes
what it made.

    .venv/bin/python bench/ledger_costs.py [--n 300] [--entries 1000000]
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402  (the path above makes the repository importable)


def started_attempts(batch: harness.Batch, n: int, offset: int) -> list[int]:
    """n payments created and sent to processing, outside any timing: their open attempts."""
    from payments.services import payment_create, payment_processing_start

    attempts = []
    for index in range(offset, offset + n):
        payment = payment_create(
            merchant=batch.merchant,
            amount_minor=1000 + index,
            currency="EUR",
            payment_method="tok_success",
            idempotency_key=batch.idempotency_key(index),
        )[0]
        attempts.append(payment_processing_start(payment_id=payment.pk).pk)
    return attempts


def succeed(attempt_id: int) -> None:
    from payments.gateways import ChargeResult, GatewayOutcome
    from payments.services import payment_charge_result_apply

    payment_charge_result_apply(
        attempt_id=attempt_id,
        result=ChargeResult(outcome=GatewayOutcome.SUCCEEDED, gateway_reference=f"ch_{attempt_id}"),
    )


class LedgerOff:
    """The ledger's payment receiver disconnected for the duration: the baseline."""

    def __enter__(self):
        from ledger.receivers import payment_status_changed_post
        from payments.signals import payment_status_changed

        payment_status_changed.disconnect(dispatch_uid="ledger.payment_status_changed")
        self.reconnect = lambda: payment_status_changed.connect(
            payment_status_changed_post, dispatch_uid="ledger.payment_status_changed"
        )

    def __exit__(self, *exc):
        self.reconnect()


def statements(attempt_id: int) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        succeed(attempt_id)
    return len(queries)


def ms_per_success(attempt_ids: list[int]) -> float:
    started = time.perf_counter()
    for attempt_id in attempt_ids:
        succeed(attempt_id)
    return (time.perf_counter() - started) * 1000 / len(attempt_ids)


def posting_cost(n: int) -> None:
    batch = harness.Batch.start("ledger")
    try:
        warm, with_ledger, without = started_attempts(batch, 3, 0)
        succeed(warm)  # the merchant's accounts are created on its first capture: not counted
        counted_with = statements(with_ledger)
        with LedgerOff():
            counted_without = statements(without)
        rounds = {"ledger": [], "baseline": []}
        offset = 3
        # Alternate (A B B A) so that a drift of the machine favours neither.
        for label in ("ledger", "baseline", "baseline", "ledger"):
            attempts = started_attempts(batch, n, offset)
            offset += n
            if label == "ledger":
                rounds[label].append(ms_per_success(attempts))
            else:
                with LedgerOff():
                    rounds[label].append(ms_per_success(attempts))
    finally:
        batch.delete()
    best = {label: min(values) for label, values in rounds.items()}
    print(f"\nposting cost per payment (payment_charge_result_apply to succeeded), N={n}, best of 2:")
    print(f"  without the ledger: {counted_without} statements, {best['baseline']:.2f} ms")
    print(f"  with the ledger:    {counted_with} statements, {best['ledger']:.2f} ms")
    print(
        f"  the posting adds:   {counted_with - counted_without} statements, "
        f"{best['ledger'] - best['baseline']:.2f} ms ({best['ledger'] / best['baseline']:.2f}x the step)"
    )


SEED_SQL = """
WITH tx AS (
    INSERT INTO ledger_transaction (idempotency_key, cause, merchant_id, memo, created_at)
    SELECT 'bench:' || %(merchant)s || ':' || g, 'adjustment', %(merchant)s, 'bench', now()
    FROM generate_series(1, %(transactions)s) AS g
    RETURNING id
)
INSERT INTO ledger_entry (transaction_id, account_id, amount_minor, created_at)
SELECT tx.id, account.id, account.amount, now()
FROM tx CROSS JOIN (VALUES (%(available)s, 1), (%(pending)s, -1)) AS account (id, amount)
"""


def balance_read(entries: int) -> None:
    from django.db import connection

    from ledger.models import Account
    from ledger.selectors import drift_check_run, merchant_balances
    from ledger.services import merchant_accounts

    batch = harness.Batch.start("ledger-read")
    try:
        accounts = merchant_accounts(batch.merchant, "EUR")
        started = time.perf_counter()
        # Seeded in SQL, balanced by construction (+1 available, -1 pending per transaction),
        # with triggers off: a million deferred balance checks would only time the seeding.
        with harness.ledger_triggers_off(), connection.cursor() as cursor:
            cursor.execute(
                SEED_SQL,
                {
                    "merchant": batch.merchant.pk,
                    "transactions": entries // 2,
                    "available": accounts["available"].pk,
                    "pending": accounts["pending"].pk,
                },
            )
        Account.objects.filter(pk=accounts["available"].pk).update(balance_minor=entries // 2)
        Account.objects.filter(pk=accounts["pending"].pk).update(balance_minor=-(entries // 2))
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE ledger_entry")
        seeded_s = time.perf_counter() - started

        kept = []
        for _ in range(50):
            started = time.perf_counter()
            merchant_balances(batch.merchant)
            kept.append((time.perf_counter() - started) * 1000)
        summed = []
        for _ in range(5):
            started = time.perf_counter()
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT account_id, SUM(amount_minor) FROM ledger_entry WHERE account_id IN (%s, %s) GROUP BY 1",
                    [accounts["available"].pk, accounts["pending"].pk],
                )
                cursor.fetchall()
            summed.append((time.perf_counter() - started) * 1000)
        print(f"\nbalance read with {entries:,} entries on one merchant's accounts (seeded in {seeded_s:.0f} s):")
        print(f"  kept running totals (merchant_balances): median {statistics.median(kept):.2f} ms of 50")
        print(f"  summing the entries instead:             median {statistics.median(summed):.1f} ms of 5")
        started = time.perf_counter()
        check = drift_check_run()
        drift_ms = (time.perf_counter() - started) * 1000
        verdict = "clean" if check.is_clean else "DRIFT"
        print(f"  drift check of the whole ledger:         {drift_ms:.0f} ms ({verdict})")
    finally:
        # The seeded rows in SQL too: Django's delete would load a million entries first.
        with harness.ledger_triggers_off(), connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM ledger_entry WHERE transaction_id IN "
                "(SELECT id FROM ledger_transaction WHERE merchant_id = %s AND idempotency_key LIKE 'bench:%%')",
                [batch.merchant.pk],
            )
            cursor.execute(
                "DELETE FROM ledger_transaction WHERE merchant_id = %s AND idempotency_key LIKE 'bench:%%'",
                [batch.merchant.pk],
            )
        batch.delete()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="payments timed per round (default 300)")
    parser.add_argument("--entries", type=int, default=1_000_000, help="entries for the balance read")
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    args = parser.parse_args()
    with harness.bench_redis(own=False, url=args.redis_url) as redis_url:
        harness.configure(
            database_url=args.database_url or harness.bench_database_url(os.environ.get("DATABASE_URL")),
            redis_url=redis_url,
        )
        posting_cost(args.n)
        balance_read(args.entries)


if __name__ == "__main__":
    main()
