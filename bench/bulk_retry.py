"""Bulk "retry" as a background job against the raw cost of queueing the same number of jobs.

    .venv/bin/python bench/bulk_retry.py [--payments 10000] [--rounds 3]

Per round, in this one process: RQ's `Queue.enqueue_many` of N jobs (the baseline: what
pushing N jobs costs with no database at all), then the admin's "Retry failed payments" on N
failed payments as the bulk job runs it (`backoffice.bulk.bulk_action_run` with
`payments.bulk.payments_retry_many`: lock, one UPDATE, events, audit entries, N processing
Jobs written and pushed), interleaved. Prints the medians and the ratio (the issue asks
for <= 3x). Uses DATABASE_URL's server with a database of its own (<name>_bench) and a
private redis-server; deletes what it made.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Batch, bench_database_url, bench_redis, configure  # noqa: E402


def _failed_payments(batch: Batch, count: int) -> list[int]:
    from payments.models import Payment
    from payments.states import PaymentStatus

    rows = [
        Payment(
            merchant=batch.merchant,
            amount_minor=1000 + index,
            currency="EUR",
            payment_method="tok_decline",
            idempotency_key=batch.idempotency_key(index),
        )
        for index in range(count)
    ]
    for row in rows:
        row.__dict__["status"] = PaymentStatus.FAILED
    Payment.objects.bulk_create(rows, batch_size=2000)
    return list(batch.payments().order_by("pk").values_list("pk", flat=True))


def time_enqueue_many(count: int) -> float:
    from backoffice.services import RUNNER, rq_queue

    queue = rq_queue("default")
    started = time.perf_counter()
    jobs = queue.enqueue_many(
        [queue.prepare_data(RUNNER, args=(f"bench-{index}",), result_ttl=60) for index in range(count)]
    )
    elapsed = time.perf_counter() - started
    with queue.connection.pipeline() as pipeline:
        for job in jobs:
            job.delete(pipeline=pipeline)
        pipeline.execute()
    return elapsed


def time_bulk_retry(batch: Batch, ids: list[int]) -> float:
    from django.contrib.auth import get_user_model

    from backoffice.bulk import bulk_action_enqueue, bulk_action_run
    from backoffice.models import Job
    from backoffice.progress import running_job
    from payments.states import PaymentStatus

    user, _ = get_user_model().objects.get_or_create(username="bench-bulk", defaults={"is_staff": True})
    job = bulk_action_enqueue(
        handler="payments.bulk.payments_retry_many", ids=ids, reason="bench", requested_by=user, verb="retry"
    )
    Job.objects.filter(pk=job.pk).update(status="running")
    started = time.perf_counter()
    with running_job(job.pk):
        result = bulk_action_run(**job.kwargs)
    elapsed = time.perf_counter() - started
    assert result["done"] == len(ids), result
    assert not batch.payments().exclude(status=PaymentStatus.PENDING).exists()
    batch.rq_job_ids.append(str(job.pk))
    Job.objects.filter(pk=job.pk).delete()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import os

    with bench_redis(own=True, url=None) as redis_url:
        configure(database_url=bench_database_url(os.environ.get("DATABASE_URL")), redis_url=redis_url)
        baseline, retry = [], []
        for round_number in range(args.rounds):
            batch = Batch.start(f"bulk{round_number}")
            try:
                ids = _failed_payments(batch, args.payments)
                baseline.append(time_enqueue_many(args.payments))
                retry.append(time_bulk_retry(batch, ids))
                print(f"round {round_number + 1}: enqueue_many {baseline[-1]:.2f} s, bulk retry {retry[-1]:.2f} s")
            finally:
                batch.delete()
        base, ours = statistics.median(baseline), statistics.median(retry)
        print(f"\n{args.payments} payments, medians of {args.rounds}:")
        print(f"  rq enqueue_many of {args.payments} jobs: {base:.2f} s")
        print(f"  bulk retry of {args.payments} failed payments: {ours:.2f} s ({args.payments / ours:,.0f}/s)")
        print(f"  ratio: {ours / base:.2f}x (wanted <= 3x)")


if __name__ == "__main__":
    main()
