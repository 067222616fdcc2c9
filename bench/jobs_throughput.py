"""Throughput of Paydesk's job pipeline, against the floor and the baseline, per worker class.

For each worker class, each round drains a queue pre-filled with N jobs three ways:

  no-op   N RQ jobs of a function that does nothing (what RQ itself costs per job);
  ours    N payments made by payments.services.payment_create: a backoffice.Job row each,
          pushed on commit, run by backoffice.runner.run_job -> payments.jobs.process_payment;
  plain   N payments made without a Job row, their processing pushed straight to RQ with
          django-rq: the same job body (lock, pending -> processing, attempt, simulated gateway,
          result), what one would write without our ledger;

with `manage.py rqworker --burst` (or `rqworker-pool --burst`) started once the queue is
full. A drain's rate is N over the time from the first job's start to the last job's end, as
RQ records them on the jobs, so the worker's start-up is not counted (the wall time with it
is printed too). Then, end to end, a worker already listening and this process creating N
payments one transaction at a time: payments/s from the first creation to all succeeded.

Runs on its own PostgreSQL database (DATABASE_URL's name + `_bench`) and Redis database 5,
which it refuses to share with another worker, and deletes what it made.

    make bench BENCH_ARGS="--n 500 --worker-class simple"
"""

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402  (the path above makes the repository importable)

TARGET_VS_NOOP = 0.6
TARGET_VS_PLAIN = 0.8


@dataclass(frozen=True)
class WorkerSetup:
    name: str
    command: str
    worker_class: str
    processes: int

    def argv(self, *, burst: bool) -> list[str]:
        argv = [sys.executable, "manage.py", self.command, "--worker-class", self.worker_class]
        if self.command == "rqworker-pool":
            argv += ["--num-workers", str(self.processes)]
        return argv + (["--burst"] if burst else []) + [harness.QUEUE]

    def describe(self) -> str:
        return f"{self.command} --worker-class {self.worker_class}" + (
            f" --num-workers {self.processes}" if self.command == "rqworker-pool" else ""
        )


def worker_setups(pool_size: int) -> dict[str, WorkerSetup]:
    return {
        "forking": WorkerSetup("forking", "rqworker", "rq.worker.Worker", 1),
        "simple": WorkerSetup("simple", "rqworker", "rq.worker.SimpleWorker", 1),
        "pool": WorkerSetup("pool", "rqworker-pool", "rq.worker.Worker", pool_size),
        "pool-simple": WorkerSetup("pool-simple", "rqworker-pool", "rq.worker.SimpleWorker", pool_size),
    }


@dataclass(frozen=True)
class Drain:
    jobs: int
    seconds: float
    wall_seconds: float

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds


class Bench:
    def __init__(self, *, n: int, log_path: Path):
        self.n = n
        self.log_path = log_path
        self.batches: list[harness.Batch] = []

    # --- producers: fill the queue, return seconds spent ------------------------------------

    def fill_noop(self, batch: harness.Batch) -> float:
        from bench.pipelines import NOOP_JOB

        queue = harness.bench_queue()
        started = time.perf_counter()
        for index in range(self.n):
            job = queue.enqueue_call(NOOP_JOB, job_id=f"{batch.merchant.slug}-noop-{index}", result_ttl=3600)
            batch.rq_job_ids.append(job.id)
        return time.perf_counter() - started

    def create_ours(self, batch: harness.Batch) -> float:
        from django.contrib.contenttypes.models import ContentType

        from backoffice.models import Job
        from payments.models import Payment
        from payments.services import payment_create

        started = time.perf_counter()
        for index in range(self.n):
            payment_create(
                merchant=batch.merchant,
                amount_minor=1000 + index,
                currency="EUR",
                payment_method="tok_success",
                idempotency_key=batch.idempotency_key(index),
            )
        seconds = time.perf_counter() - started
        payment_ids = [str(pk) for pk in batch.payments().values_list("pk", flat=True)]
        batch.rq_job_ids = [
            str(pk)
            for pk in Job.objects.filter(
                content_type=ContentType.objects.get_for_model(Payment), object_id__in=payment_ids
            ).values_list("pk", flat=True)
        ]
        return seconds

    def create_plain(self, batch: harness.Batch) -> float:
        from bench.pipelines import plain_job_id, plain_payment_create

        started = time.perf_counter()
        for index in range(self.n):
            plain_payment_create(
                merchant=batch.merchant,
                amount_minor=1000 + index,
                currency="EUR",
                payment_method="tok_success",
                idempotency_key=batch.idempotency_key(index),
            )
        seconds = time.perf_counter() - started
        batch.rq_job_ids = [plain_job_id(payment) for payment in batch.payments()]
        return seconds

    # --- measurements -------------------------------------------------------------------------

    def drain(self, setup: WorkerSetup, label: str, fill: Callable[[harness.Batch], float]) -> tuple[Drain, float]:
        """Fill the queue with N jobs, then time a burst worker emptying it."""
        from rq.job import Job as RQJob
        from rq.job import JobStatus as RQJobStatus

        batch = self._batch(label)
        fill_seconds = fill(batch)
        queue = harness.bench_queue()
        if queue.count != self.n:
            raise RuntimeError(f"{label}: expected {self.n} jobs on the queue, found {queue.count}")
        started = time.perf_counter()
        self._run_worker(setup, burst=True, timeout=120 + self.n)
        wall_seconds = time.perf_counter() - started
        rq_jobs = RQJob.fetch_many(batch.rq_job_ids, connection=queue.connection)
        vanished = sum(job is None for job in rq_jobs)
        if vanished:
            raise RuntimeError(f"{label}: {vanished} jobs gone from Redis (a test run flushed it?): use --own-redis")
        unfinished = sum(job.get_status(refresh=False) != RQJobStatus.FINISHED for job in rq_jobs)
        if unfinished or queue.count:
            raise RuntimeError(f"{label}: {unfinished} jobs did not finish; see {self.log_path}")
        if label != "noop":
            self._check_all_succeeded(batch)
        seconds = (max(job.ended_at for job in rq_jobs) - min(job.started_at for job in rq_jobs)).total_seconds()
        self._forget(batch)
        return Drain(jobs=self.n, seconds=seconds, wall_seconds=wall_seconds), fill_seconds

    def end_to_end(self, setup: WorkerSetup, label: str, create: Callable[[harness.Batch], float]) -> float:
        """Payments/s from the first creation to all succeeded, with a worker already listening."""
        from payments.states import PaymentStatus

        batch = self._batch(label)
        worker = self._start_worker(setup)
        try:
            started = time.perf_counter()
            create(batch)
            deadline = started + 120 + self.n
            while batch.payments().filter(status=PaymentStatus.SUCCEEDED).count() < self.n:
                if worker.poll() is not None or time.perf_counter() > deadline:
                    raise RuntimeError(f"{label} end to end: not all succeeded; see {self.log_path}")
                time.sleep(0.01)
            seconds = time.perf_counter() - started
        finally:
            self._stop_worker(worker)
        self._forget(batch)
        return self.n / seconds

    # --- workers --------------------------------------------------------------------------------

    def _run_worker(self, setup: WorkerSetup, *, burst: bool, timeout: float) -> None:
        with open(self.log_path, "a") as log:
            log.write(f"\n=== {' '.join(setup.argv(burst=burst))}\n")
            log.flush()
            subprocess.run(
                setup.argv(burst=burst),
                cwd=harness.ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=True,
            )

    def _start_worker(self, setup: WorkerSetup) -> subprocess.Popen:
        from rq import Worker

        with open(self.log_path, "a") as log:
            log.write(f"\n=== {' '.join(setup.argv(burst=False))}\n")
            log.flush()
            worker = subprocess.Popen(setup.argv(burst=False), cwd=harness.ROOT, stdout=log, stderr=subprocess.STDOUT)
        queue = harness.bench_queue()
        deadline = time.perf_counter() + 60
        while len(Worker.all(queue=queue)) < setup.processes:
            if worker.poll() is not None or time.perf_counter() > deadline:
                self._stop_worker(worker)
                raise RuntimeError(f"{setup.name} worker did not start; see {self.log_path}")
            time.sleep(0.05)
        return worker

    def _stop_worker(self, worker: subprocess.Popen) -> None:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)  # warm shutdown: the current job finishes
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()

    # --- bookkeeping ------------------------------------------------------------------------------

    def _batch(self, label: str) -> harness.Batch:
        batch = harness.Batch.start(label)
        self.batches.append(batch)
        return batch

    def _forget(self, batch: harness.Batch) -> None:
        # Each measurement starts from the same table sizes and an empty Redis database.
        batch.delete()
        self.batches.remove(batch)

    def _check_all_succeeded(self, batch: harness.Batch) -> None:
        from payments.states import PaymentStatus

        succeeded = batch.payments().filter(status=PaymentStatus.SUCCEEDED).count()
        if succeeded != self.n:
            raise RuntimeError(f"{batch.label}: {succeeded} of {self.n} payments succeeded; see {self.log_path}")

    def cleanup(self) -> None:
        for batch in list(self.batches):
            self._forget(batch)


# --- one worker class: rounds, medians, ratios -------------------------------------------------


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f}  [{min(values):.1f} - {max(values):.1f}]"


def ratio_spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.2f}  [{min(values):.2f} - {max(values):.2f}]"


def measure(bench: Bench, setup: WorkerSetup, repeat: int) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {}

    def keep(name: str, value: float) -> None:
        figures.setdefault(name, []).append(value)

    print(f"\n## {setup.name}: {setup.describe()}", flush=True)
    for round_number in range(1, repeat + 1):
        load = os.getloadavg()[0]
        noop, _ = bench.drain(setup, "noop", bench.fill_noop)
        # Alternate which pipeline goes first, so a drift in the machine favours neither.
        pipelines = [("ours", bench.create_ours), ("plain", bench.create_plain)]
        if round_number % 2 == 0:
            pipelines.reverse()
        drains = {label: bench.drain(setup, label, create) for label, create in pipelines}
        end_to_end = {label: bench.end_to_end(setup, label, create) for label, create in pipelines}
        (ours, ours_fill), (plain, plain_fill) = drains["ours"], drains["plain"]
        for name, value in [
            ("no-op jobs/s", noop.rate),
            ("ours jobs/s", ours.rate),
            ("plain jobs/s", plain.rate),
            ("ours/no-op", ours.rate / noop.rate),
            ("ours/plain", ours.rate / plain.rate),
            ("end to end ours payments/s", end_to_end["ours"]),
            ("end to end plain payments/s", end_to_end["plain"]),
            ("create ours payments/s", bench.n / ours_fill),
            ("create plain payments/s", bench.n / plain_fill),
            ("no-op wall s", noop.wall_seconds),
            ("ours wall s", ours.wall_seconds),
            ("plain wall s", plain.wall_seconds),
        ]:
            keep(name, value)
        print(
            f"round {round_number}: load {load:.2f} | no-op {noop.rate:.0f}/s | ours {ours.rate:.1f}/s | "
            f"plain {plain.rate:.1f}/s | ours/no-op {ours.rate / noop.rate:.2f} | "
            f"ours/plain {ours.rate / plain.rate:.2f} | end to end ours {end_to_end['ours']:.1f}/s, "
            f"plain {end_to_end['plain']:.1f}/s",
            flush=True,
        )
    print(f"median of {repeat} rounds  [min - max]")
    for name, values in figures.items():
        if name.startswith("ours/"):
            target = TARGET_VS_NOOP if name == "ours/no-op" else TARGET_VS_PLAIN
            verdict = "met" if statistics.median(values) >= target else "MISSED"
            print(f"  {name:30} {ratio_spread(values)}   target >= {target}: {verdict}")
        else:
            print(f"  {name:30} {spread(values)}")
    return figures


def summary(n: int, results: dict[str, dict[str, list[float]]]) -> None:
    print(f"\n## Summary (N={n}, medians)\n")
    print(
        "| worker class | no-op jobs/s | ours jobs/s | plain jobs/s | ours/no-op | ours/plain "
        "| end to end ours payments/s | end to end plain payments/s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, figures in results.items():
        median = {key: statistics.median(values) for key, values in figures.items()}
        print(
            f"| {name} | {median['no-op jobs/s']:.0f} | {median['ours jobs/s']:.1f} | {median['plain jobs/s']:.1f} "
            f"| {median['ours/no-op']:.2f} | {median['ours/plain']:.2f} "
            f"| {median['end to end ours payments/s']:.1f} | {median['end to end plain payments/s']:.1f} |"
        )


def machine_description() -> str:
    from importlib.metadata import version

    from django import get_version
    from django.db import connection

    model = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor() or "unknown CPU",
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    redis = harness.bench_queue().connection.info("server")["redis_version"]
    return (
        f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, Django {get_version()}, "
        f"rq {version('rq')}, django-rq {version('django-rq')}, PostgreSQL {postgres}, Redis {redis}"
    )


def code_description() -> str:
    """The commit measured, and whether the application code differs from it."""

    def git(*args: str) -> str:
        run = subprocess.run(["git", *args], cwd=harness.ROOT, capture_output=True, text=True)
        return run.stdout.strip() if run.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "not a git checkout"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench", ":!docs")
    return f"commit {commit}" + (" with uncommitted changes to the application" if changed else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="jobs (and payments) per drain (default 500)")
    parser.add_argument(
        "--worker-class",
        action="append",
        choices=["forking", "simple", "pool", "pool-simple"],
        help="repeatable; default: all four",
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds per worker class; medians are printed")
    parser.add_argument("--pool-size", type=int, default=os.cpu_count() or 2, help="workers of rqworker-pool")
    parser.add_argument("--gateway-latency-ms", type=int, default=0, help="simulated gateway latency (default 0)")
    parser.add_argument("--database-url", help="default: DATABASE_URL with its database name + _bench")
    parser.add_argument("--redis-url", help=f"default: REDIS_URL with database {harness.BENCH_REDIS_DB}")
    parser.add_argument(
        "--own-redis",
        action="store_true",
        help="start a private redis-server (safe from test suites that flush their database)",
    )
    args = parser.parse_args()

    database_url = args.database_url or harness.bench_database_url(os.environ.get("DATABASE_URL"))
    # A plain `kill` unwinds like Ctrl-C: workers stopped, rows and jobs deleted, own Redis stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with harness.bench_redis(own=args.own_redis, url=args.redis_url) as redis_url:
        run(args, database_url=database_url, redis_url=redis_url)


def run(args, *, database_url: str, redis_url: str) -> None:
    harness.configure(database_url=database_url, redis_url=redis_url, gateway_latency_ms=args.gateway_latency_ms)
    known_queues = harness.refuse_shared_queues()
    setups = worker_setups(args.pool_size)
    chosen = args.worker_class or list(setups)

    log_path = Path(tempfile.mkstemp(prefix="paydesk-bench-", suffix=".log")[1])
    print(f"# Paydesk job throughput, N={args.n}, {args.repeat} rounds, gateway latency {args.gateway_latency_ms} ms")
    print(f"machine: {machine_description()}")
    print(f"code: {code_description()}")
    print(f"database: {database_url}  redis: {redis_url}  queue: {harness.QUEUE}  worker logs: {log_path}")
    bench = Bench(n=args.n, log_path=log_path)
    results = {}
    failed = False
    try:
        for name in chosen:
            results[name] = measure(bench, setups[name], args.repeat)
    except (RuntimeError, subprocess.SubprocessError) as error:
        failed = True
        print(f"bench failed: {error}", file=sys.stderr)
    finally:
        bench.cleanup()
        harness.forget_queues(known_queues)
    if results:
        summary(args.n, results)
    if failed:
        raise SystemExit(1)
    log_path.unlink()


if __name__ == "__main__":
    main()
