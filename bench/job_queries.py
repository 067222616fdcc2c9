"""Where a payment's time goes, without RQ: the SQL each side of each pipeline sends, and
milliseconds per payment run in this process (so no fork, no dequeue, no worker bookkeeping).

  ours   payment_create (Job row, push on commit)  then  backoffice.runner.run_job
  plain  bench.pipelines.plain_payment_create      then  payments.jobs.process_payment

Same databases as jobs_throughput.py; deletes what it made.

    .venv/bin/python bench/job_queries.py [--n 300]
"""

import argparse
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402  (the path above makes the repository importable)


def create_ours(batch: harness.Batch, index: int):
    from payments.services import payment_create

    payment = payment_create(
        merchant=batch.merchant,
        amount_minor=1000,
        currency="EUR",
        payment_method="tok_success",
        idempotency_key=batch.idempotency_key(index),
    )[0]
    return payment.pk


def job_ids(batch: harness.Batch, payment_ids: list[int]) -> list[str]:
    """The Jobs of our payments, looked up after the fact so that no query of ours is counted."""
    from backoffice.models import Job

    by_payment = dict(Job.objects.filter(object_id__in=[str(pk) for pk in payment_ids]).values_list("object_id", "pk"))
    found = [str(by_payment[str(pk)]) for pk in payment_ids]
    batch.rq_job_ids += found
    return found


def run_ours(job_id: str) -> None:
    from backoffice.runner import run_job

    run_job(job_id)


def create_plain(batch: harness.Batch, index: int):
    from bench.pipelines import plain_job_id, plain_payment_create

    payment = plain_payment_create(
        merchant=batch.merchant,
        amount_minor=1000,
        currency="EUR",
        payment_method="tok_success",
        idempotency_key=batch.idempotency_key(index),
    )
    batch.rq_job_ids.append(plain_job_id(payment))
    return payment.pk


def run_plain(payment_id: int) -> None:
    from payments.jobs import process_payment

    process_payment(payment_id)


def shorten(sql: str) -> str:
    sql = re.sub(r'"[a-z_]+"\."([a-z_]+)"', r"\1", sql)
    sql = re.sub(r"SELECT .*? FROM", "SELECT ... FROM", sql)
    sql = re.sub(r"INSERT INTO (\S+) \(.*", r"INSERT INTO \1 (...)", sql)
    sql = re.sub(r"SET (.{60}).*? WHERE", r"SET \1... WHERE", sql)
    return sql[:150]


def show_queries(title: str, func, argument) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        func(argument)
    print(f"\n{title}: {len(captured)} queries")
    for query in captured.captured_queries:
        print(f"  {shorten(query['sql'])}")
    return len(captured)


def time_per_payment(n: int, label: str, create, run) -> tuple[float, float]:
    batch = harness.Batch.start(label)
    try:
        started = time.perf_counter()
        handles = [create(batch, index) for index in range(n)]
        created = time.perf_counter()
        if label == "ours":
            handles = job_ids(batch, handles)
        ran = time.perf_counter()
        for handle in handles:
            run(handle)
        finished = time.perf_counter()
    finally:
        batch.delete()
    return (created - started) * 1000 / n, (finished - ran) * 1000 / n


def count_queries() -> dict[str, int]:
    batch = harness.Batch.start("queries")
    try:
        # One of each first, so that one-off costs (content types, imports) are not counted.
        run_ours(job_ids(batch, [create_ours(batch, 0)])[0])
        run_plain(create_plain(batch, 1))
        counts = {
            "ours create": show_queries("ours: payment_create (+ on-commit push)", lambda i: create_ours(batch, i), 2),
            "plain create": show_queries("plain: plain_payment_create", lambda i: create_plain(batch, i), 3),
        }
        ours_payment, plain_payment = (batch.payments().get(idempotency_key=batch.idempotency_key(i)) for i in (2, 3))
        counts["ours run"] = show_queries("ours: run_job", run_ours, job_ids(batch, [ours_payment.pk])[0])
        counts["plain run"] = show_queries("plain: process_payment", run_plain, plain_payment.pk)
    finally:
        batch.delete()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="payments timed per pipeline (default 300)")
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    parser.add_argument("--own-redis", action="store_true", help="start a private redis-server")
    args = parser.parse_args()
    with harness.bench_redis(own=args.own_redis, url=args.redis_url) as redis_url:
        harness.configure(
            database_url=args.database_url or harness.bench_database_url(os.environ.get("DATABASE_URL")),
            redis_url=redis_url,
        )
        measure(args.n)


def measure(n: int) -> None:
    known_queues = harness.refuse_shared_queues()
    try:
        counts = count_queries()
        # Alternate, twice each, so that a drift of the machine favours neither.
        timings: dict[str, list[tuple[float, float]]] = {"ours": [], "plain": []}
        for _ in range(2):
            timings["ours"].append(time_per_payment(n, "ours", create_ours, run_ours))
            timings["plain"].append(time_per_payment(n, "plain", create_plain, run_plain))
    finally:
        harness.forget_queues(known_queues)
    print(f"\nin this process, N={n}, best of 2: ms per payment")
    print(f"  {'':6} {'create':>8} {'run':>8}   queries create / run")
    for label in ("ours", "plain"):
        create_ms = min(timing[0] for timing in timings[label])
        run_ms = min(timing[1] for timing in timings[label])
        print(f"  {label:6} {create_ms:8.2f} {run_ms:8.2f}   {counts[label + ' create']} / {counts[label + ' run']}")


if __name__ == "__main__":
    main()
