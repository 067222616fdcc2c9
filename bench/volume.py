"""Volume: payments through the processor service over HTTP, with the worker `make run` runs
(one `rqworker payments notifications default --with-scheduler`, SimpleWorker), batched
(payments.batch, the default) against one payment per RQ job (JOBS_BATCH_ENABLED=false), in
the same run, round after round.

For each processor latency (default 200 ms, then 0 ms) and round:
  end to end   N payments created (one transaction each, as requests would) with a worker
               already listening; payments/s from the first creation to all succeeded,
               the worker's CPU seconds per payment;
then once, at the first latency, batched only:
  steady load  payments offered at a steady rate (default 100/s for 20 s), one per
               transaction; the latency from creation to the final state, p50 and p99, and
               the worker's peak memory;
  statements   the SQL statements per payment of run_job in this process, batched and not.

    make bench-volume                                    # what docs/benchmarks.md reports
    make bench-volume VOLUME_ARGS="--latency-ms 200 --repeat 1"
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from processor.launch import ProcessorProcess  # noqa: E402

WORKER = [
    "manage.py",
    "rqworker",
    "payments",
    "notifications",
    "default",
    "--with-scheduler",
    "--worker-class",
    "rq.worker.SimpleWorker",
]


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_memory_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MB."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


class Worker:
    def __init__(self, *, batched: bool, processor: ProcessorProcess, log_path: Path):
        from rq import Worker as RQWorker

        env = {
            **os.environ,
            "PAYMENTS_GATEWAY": "payments.gateways.http.HttpGateway",
            "PAYMENTS_PROCESSOR_URL": processor.url,
            "JOBS_BATCH_ENABLED": "true" if batched else "false",
        }
        with open(log_path, "a") as log:
            log.write(f"\n=== worker batched={batched}\n")
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, *WORKER], cwd=harness.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        queue = harness.bench_queue()
        while not RQWorker.all(queue=queue):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the worker did not start; see {log_path}")
            time.sleep(0.05)

    def cpu(self) -> float:
        return proc_cpu_seconds(self.process.pid)

    def memory(self) -> tuple[float, float]:
        return proc_memory_mb(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def create(batch: harness.Batch, index: int):
    from payments.services import payment_create

    return payment_create(
        merchant=batch.merchant,
        amount_minor=1000 + index,
        currency="EUR",
        payment_method="tok_success",
        idempotency_key=batch.idempotency_key(index),
    )[0]


def create_payments(batch: harness.Batch, n: int, chunk: int) -> None:
    """N payments: one transaction each (chunk 0, as requests would), or payments_create_many
    `chunk` at a time (as an import or a bulk API would)."""
    if not chunk:
        for index in range(n):
            create(batch, index)
        return
    from payments.services import payments_create_many

    for start in range(0, n, chunk):
        payments_create_many(
            merchant=batch.merchant,
            items=[
                {
                    "amount_minor": 1000 + index,
                    "currency": "EUR",
                    "payment_method": "tok_success",
                    "idempotency_key": batch.idempotency_key(index),
                }
                for index in range(start, min(n, start + chunk))
            ],
        )


def creation(*, n: int, chunk: int) -> dict:
    """Creation alone (no worker): payments/s and the producer's CPU per payment, one per
    transaction against payments_create_many `chunk` at a time, in this process."""
    figures = {}
    for label, size in (("one per transaction", 0), (f"create_many x{chunk}", chunk)):
        batch = harness.Batch.start("creation")
        try:
            cpu, started = time.process_time(), time.perf_counter()
            create_payments(batch, n, size)
            seconds = time.perf_counter() - started
            figures[label] = {"rate": n / seconds, "cpu_ms": 1000 * (time.process_time() - cpu) / n}
        finally:
            batch.delete()
    return figures


def wait_all_succeeded(batch: harness.Batch, n: int, worker: Worker, timeout: float) -> None:
    from payments.states import PaymentStatus

    deadline = time.monotonic() + timeout
    while batch.payments().filter(status=PaymentStatus.SUCCEEDED).count() < n:
        if worker.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{batch.label}: not all {n} payments succeeded in time")
        time.sleep(0.02)


def end_to_end(
    *, label: str, n: int, batched: bool, processor: ProcessorProcess, log_path: Path, chunk: int = 0
) -> dict:
    batch = harness.Batch.start(label)
    worker = Worker(batched=batched, processor=processor, log_path=log_path)
    try:
        cpu_before, producer_before = worker.cpu(), time.process_time()
        started = time.perf_counter()
        create_payments(batch, n, chunk)
        created = time.perf_counter()
        producer_cpu = time.process_time() - producer_before
        wait_all_succeeded(batch, n, worker, timeout=120 + n)
        seconds = time.perf_counter() - started
        cpu = worker.cpu() - cpu_before
        memory = worker.memory()
    finally:
        worker.stop()
        batch.delete()
    return {
        "rate": n / seconds,
        "create_rate": n / (created - started),
        "worker_cpu_ms": 1000 * cpu / n,
        "producer_cpu_ms": 1000 * producer_cpu / n,
        "rss_mb": memory[0],
        "peak_rss_mb": memory[1],
    }


def drain(*, label: str, n: int, batched: bool, processor: ProcessorProcess, log_path: Path, chunk: int = 0) -> dict:
    """N payments created first, then a worker started: payments/s from the first Job's
    start to the last Job's end (the worker's capacity, without the producer beside it)."""
    from django.db.models import Max, Min

    from backoffice.models import Job

    batch = harness.Batch.start(label)
    try:
        create_payments(batch, n, chunk or 500)
        worker = Worker(batched=batched, processor=processor, log_path=log_path)
        try:
            wait_all_succeeded(batch, n, worker, timeout=120 + n)
            cpu = worker.cpu()
        finally:
            worker.stop()
        ids = [str(pk) for pk in batch.payments().values_list("pk", flat=True)]
        span = Job.objects.filter(func="payments.jobs.process_payment", object_id__in=ids).aggregate(
            first=Min("started_at"), last=Max("finished_at")
        )
    finally:
        batch.delete()
    seconds = (span["last"] - span["first"]).total_seconds()
    return {"rate": n / seconds, "worker_cpu_ms": 1000 * cpu / n}


def steady(*, rate: float, seconds: float, processor: ProcessorProcess, log_path: Path) -> dict:
    from django.db.models import F, Max

    from payments.models import PaymentEvent
    from payments.states import PaymentStatus

    batch = harness.Batch.start("steady")
    worker = Worker(batched=True, processor=processor, log_path=log_path)
    n = int(rate * seconds)
    try:
        started = time.perf_counter()
        for index in range(n):
            due = started + index / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            create(batch, index)
        offered = n / (time.perf_counter() - started)
        wait_all_succeeded(batch, n, worker, timeout=120 + n)
        memory = worker.memory()
        finals = (
            PaymentEvent.objects.filter(payment__merchant=batch.merchant, to_status=PaymentStatus.SUCCEEDED)
            .values("payment_id")
            .annotate(latency=Max(F("created_at") - F("payment__created_at")))
        )
        latencies = sorted(row["latency"].total_seconds() * 1000 for row in finals)
    finally:
        worker.stop()
        batch.delete()
    return {
        "offered": offered,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "rss_mb": memory[0],
        "peak_rss_mb": memory[1],
    }


def statements(*, n: int, processor: ProcessorProcess) -> dict:
    """SQL statements per payment of run_job in this process (no RQ), batched and one by one."""
    from django.conf import settings
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from backoffice.models import Job
    from backoffice.runner import run_job

    settings.PAYMENTS_GATEWAY = "payments.gateways.http.HttpGateway"
    settings.PAYMENTS_PROCESSOR_URL = processor.url
    figures = {}
    for batched in (True, False):
        settings.JOBS_BATCH_ENABLED = batched
        batch = harness.Batch.start("statements")
        try:
            for index in range(n):
                create(batch, index)
            jobs = [
                str(pk)
                for pk in Job.objects.filter(
                    func="payments.jobs.process_payment",
                    object_id__in=[str(pk) for pk in batch.payments().values_list("pk", flat=True)],
                ).values_list("pk", flat=True)
            ]
            with CaptureQueriesContext(connection) as queries:
                for job_id in jobs[:1] if batched else jobs:
                    run_job(job_id)
            figures["batched" if batched else "one per job"] = len(queries) / n
        finally:
            batch.delete()
    return figures


def spread(values: list[float], digits: int = 1) -> str:
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}–{max(values):.{digits}f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="payments per batched end-to-end measurement")
    parser.add_argument("--n-single", type=int, default=100, help="payments per one-per-job measurement")
    parser.add_argument("--latency-ms", type=int, action="append", help="processor latency (default 200, then 0)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--steady-rate", type=float, default=100.0)
    parser.add_argument("--steady-seconds", type=float, default=20.0)
    parser.add_argument(
        "--create-chunk",
        type=int,
        default=0,
        help="end to end: create payments with payments_create_many this many at a time (0: one per transaction)",
    )
    parser.add_argument("--creation-n", type=int, default=2000, help="payments per creation-only measurement")
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    parser.add_argument("--own-redis", action="store_true")
    parser.add_argument(
        "--drain",
        action="store_true",
        help="measure drains (payments created first, then the worker) instead of end to end, and stop there",
    )
    args = parser.parse_args()
    database_url = args.database_url or harness.bench_database_url(os.environ.get("DATABASE_URL"))
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with harness.bench_redis(own=args.own_redis, url=args.redis_url) as redis_url:
        run(args, database_url=database_url, redis_url=redis_url)


def run(args, *, database_url: str, redis_url: str) -> None:
    from bench.jobs_throughput import code_description, machine_description

    harness.configure(database_url=database_url, redis_url=redis_url)
    known_queues = harness.refuse_shared_queues()
    log_path = Path(tempfile.mkstemp(prefix="paydesk-volume-", suffix=".log")[1])
    latencies = args.latency_ms or [200, 0]
    print(f"# Paydesk volume: N={args.n} batched, {args.n_single} one per job, {args.repeat} rounds")
    print(f"machine: {machine_description()}")
    print(f"code: {code_description()}")
    print(f"worker: {' '.join(WORKER[1:])}  logs: {log_path}", flush=True)
    chunk = args.create_chunk
    print(f"creation: {f'payments_create_many, {chunk} a time' if chunk else 'one transaction per payment'}")
    made = creation(n=args.creation_n, chunk=chunk or 100)
    print(
        f"\n## creation alone, {args.creation_n} payments: "
        + ", ".join(f"{label} {v['rate']:.0f}/s ({v['cpu_ms']:.2f} ms CPU each)" for label, v in made.items()),
        flush=True,
    )
    processor = ProcessorProcess(log_path=log_path)
    try:
        for latency in latencies:
            processor.stop()
            processor.start(PROCESSOR_LATENCY_MS=latency)
            print(f"\n## processor latency {latency} ms", flush=True)
            rounds: dict[str, list[dict]] = {"batched": [], "one per job": []}
            for round_number in range(1, args.repeat + 1):
                load = os.getloadavg()[0]
                order = [("batched", True, args.n), ("one per job", False, args.n_single)]
                if round_number % 2 == 0:
                    order.reverse()
                measure = drain if args.drain else end_to_end
                figures = {
                    label: measure(
                        label=label.replace(" ", "-"),
                        n=n,
                        batched=batched,
                        processor=processor,
                        log_path=log_path,
                        chunk=args.create_chunk,
                    )
                    for label, batched, n in order
                }
                for label, value in figures.items():
                    rounds[label].append(value)
                ratio = figures["batched"]["rate"] / figures["one per job"]["rate"]
                created = "" if args.drain else f" (created at {figures['batched']['create_rate']:.0f}/s)"
                print(
                    f"round {round_number}: load {load:.1f} | batched {figures['batched']['rate']:.1f}/s{created} | "
                    f"one per job {figures['one per job']['rate']:.1f}/s | ratio {ratio:.1f}",
                    flush=True,
                )
            ratios = [b["rate"] / s["rate"] for b, s in zip(rounds["batched"], rounds["one per job"], strict=True)]
            print(f"median of {args.repeat} rounds [min–max]")
            for label, values in rounds.items():
                what = "drain" if args.drain else "end to end"
                print(f"  {label:12} {what} payments/s   {spread([v['rate'] for v in values])}")
                print(f"  {label:12} worker CPU ms/payment    {spread([v['worker_cpu_ms'] for v in values], 2)}")
                if args.drain:
                    continue
                print(f"  {label:12} producer CPU ms/payment  {spread([v['producer_cpu_ms'] for v in values], 2)}")
                print(f"  {label:12} creation payments/s      {spread([v['create_rate'] for v in values])}")
                print(f"  {label:12} worker peak RSS MB       {spread([v['peak_rss_mb'] for v in values])}")
            print(f"  batched / one per job                {spread(ratios)}", flush=True)
        if args.drain:
            return
        processor.stop()
        processor.start(PROCESSOR_LATENCY_MS=latencies[0])
        figures = steady(rate=args.steady_rate, seconds=args.steady_seconds, processor=processor, log_path=log_path)
        print(
            f"\n## steady load, latency {latencies[0]} ms, batched: offered {figures['offered']:.1f}/s for "
            f"{args.steady_seconds:g} s: creation to succeeded p50 {figures['p50_ms']:.0f} ms, "
            f"p99 {figures['p99_ms']:.0f} ms; worker RSS {figures['rss_mb']:.0f} MB "
            f"(peak {figures['peak_rss_mb']:.0f} MB)",
            flush=True,
        )
        counted = statements(n=100, processor=processor)
        print(
            "\n## SQL statements per payment (run_job in this process, 100 payments): "
            + ", ".join(f"{label} {value:.1f}" for label, value in counted.items())
        )
    finally:
        processor.stop()
        harness.forget_queues(known_queues)
    log_path.unlink()


if __name__ == "__main__":
    main()
