"""`make chaos`: fault scenarios against real Paydesk processes, each followed by an audit.

    python -m tests.chaos.run            # every scenario
    python -m tests.chaos.run --short    # the CI subset (tests/e2e/test_chaos.py runs it)
    python -m tests.chaos.run --repeat 3 --only redis_restart

It starts a PostgreSQL cluster and a redis-server of its own (tests/chaos/cluster.py), two
workers and the sweeper under `manage.py supervise` (as `make run` does), then for each
scenario: creates payments, injects the fault, and waits until the audit passes: every
payment final or explained, at most one gateway charge per payment, no Job left
pending/queued/running/retrying, no event or notification written twice, every webhook
delivered, nothing in RQ's failed registry. It prints the time to recover (from the end of
the fault to the audit passing) and exits non-zero if any scenario did not recover.
"""

import argparse
import http.server
import os
import random
import sys
import threading
import time
from pathlib import Path

from tests.chaos.cluster import own_services
from tests.chaos.processes import ROOT, Fleet

# Short timings, so that a run takes minutes; they satisfy the start-up checks of settings.
TIMINGS = {
    "JOBS_HEARTBEAT_SECONDS": "0.5",
    "JOBS_STALE_AFTER_SECONDS": "3",
    "JOBS_SWEEP_INTERVAL_SECONDS": "1",
    "JOBS_PENDING_GRACE_SECONDS": "1",
    "JOBS_QUEUED_GRACE_SECONDS": "3",
    "JOBS_RETRY_BACKOFF_SECONDS": "0.5,1,2,4",
    "JOBS_DEFAULT_MAX_ATTEMPTS": "6",
    "PAYMENTS_RECOVERY_SCHEDULE_SECONDS": "0.5,1,2",
    "PAYMENTS_GATEWAY_LATENCY_MS": "60",
    "WEBHOOKS_ALLOW_LOOPBACK": "true",
    "WEBHOOKS_TIMEOUT_SECONDS": "1",
    "WEBHOOKS_TRY_IN_FLIGHT_SECONDS": "2.5",
    "WEBHOOKS_RETRY_SCHEDULE_SECONDS": "0.5,1,2,4,8,8,8",
    "REDIS_PUSH_TIMEOUT_SECONDS": "1",
}
TOKENS = ["tok_success"] * 8 + ["tok_decline", "tok_timeout"]
RECOVERY_TIMEOUT = 120.0


class Receiver(http.server.ThreadingHTTPServer):
    """A merchant's webhook endpoint: counts deliveries per webhook-id; can be 'down' (503)."""

    daemon_threads = True

    def __init__(self):
        self.down = False
        self.seen: dict[str, int] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.down:
                    self.send_response(503)
                else:
                    with receiver.lock:
                        event = self.headers.get("webhook-id", "?")
                        receiver.seen[event] = receiver.seen.get(event, 0) + 1
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


class Chaos:
    def __init__(self, postgres, redis, log_dir: Path):
        self.postgres, self.redis = postgres, redis
        self.log_dir = log_dir
        self.receiver = Receiver()
        self.env = {
            **os.environ,
            **TIMINGS,
            "DJANGO_SETTINGS_MODULE": "backoffice.settings",
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": "chaos-only-secret-key-" + "c" * 40,
            "DATABASE_URL": postgres.url,
            "REDIS_URL": redis.url,
            "EMAIL_URL": "dummymail://",
        }
        self.fleet = Fleet(self.env, log_dir)
        self.created = 0

    # --- set-up --------------------------------------------------------------------------------

    def setup(self) -> None:
        os.environ.update(self.env)  # this process writes payments as the web would
        import django

        django.setup()
        from django.core.management import call_command

        from notifications.endpoints import webhook_endpoint_create
        from payments.models import Merchant

        call_command("migrate", verbosity=0)
        self.merchant = Merchant.objects.create(name="Chaos", slug="chaos", contact_email="ops@chaos.example")
        webhook_endpoint_create(merchant=self.merchant, url=f"http://127.0.0.1:{self.receiver.server_port}/hooks")
        self.standard_fleet()

    def standard_fleet(self) -> None:
        """Two workers and the sweeper under `manage.py supervise`, as `make run` starts them:
        each scenario begins with these (a scenario may have replaced them with bare ones)."""
        if any(not process.supervised for process in self.fleet.processes) or not self.fleet.processes:
            self.fleet.stop_all()
            for _ in range(2):
                self.fleet.start_worker()
            self.fleet.start_sweeper()
        self.wait_for_workers(self.fleet.workers())

    def wait_for_workers(self, processes, timeout: float = 180) -> None:
        """Until each of these worker processes listens (they start slowly on a busy machine)."""
        import django_rq
        from rq import Worker

        deadline = time.monotonic() + timeout
        while True:
            listening = {worker.pid for worker in Worker.all(connection=django_rq.get_connection("default"))}
            if all(process.payload_pid() in listening for process in processes):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers not listening after {timeout:.0f} s")
            time.sleep(0.2)

    # --- load ----------------------------------------------------------------------------------

    def create_payments(self, count: int) -> int:
        """Create payments as the portal would; returns how many were committed."""
        from django.db import connections

        from payments.services import payment_create

        made = 0
        for _ in range(count):
            self.created += 1
            try:
                payment_create(
                    merchant=self.merchant,
                    amount_minor=random.randint(100, 99_999),
                    currency="EUR",
                    payment_method=random.choice(TOKENS),
                    idempotency_key=f"chaos-{self.created}",
                )
                made += 1
            except Exception as error:  # the database is down: the merchant would see an error page
                print(f"    payment not created: {type(error).__name__}", flush=True)
                connections.close_all()
        return made

    def push_every_open_job_again(self, times: int) -> None:
        from backoffice.models import Job, JobStatus
        from backoffice.services import job_push_rollback_unsafe

        for job in Job.objects.filter(status__in=(JobStatus.QUEUED, JobStatus.PENDING)):
            for _ in range(times):
                job_push_rollback_unsafe(job_id=job.pk, queue=job.queue)

    # --- audit ---------------------------------------------------------------------------------

    def settled(self) -> bool:
        from django.db import connections

        from backoffice.models import Job, JobStatus
        from notifications.models import Notification
        from payments.models import Payment

        try:
            connections.close_all()
            open_jobs = Job.objects.filter(
                status__in=(JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.RETRYING)
            ).exists()
            moving = Payment.objects.filter(status__in=("pending", "processing")).exists()
            unknown = Payment.objects.filter(status="unknown", needs_review=False).exists()
            undelivered = Notification.objects.exclude(status="delivered").exists()
            return not (open_jobs or moving or unknown or undelivered)
        except Exception:  # the database is still coming back
            return False

    def audit(self) -> list[str]:
        """What is wrong now; empty when everything holds."""
        from collections import Counter

        import django_rq
        from django.db.models import Count

        from backoffice.models import Job, JobStatus
        from backoffice.services import QUEUES
        from notifications.models import Notification
        from payments.models import Payment, PaymentEvent, SimulatedGatewayRecord

        problems = []
        for payment in Payment.objects.exclude(status__in=("succeeded", "failed", "canceled")):
            if not (payment.status == "unknown" and payment.needs_review):
                problems.append(f"payment {payment.public_id} is {payment.status}")
        charges = Counter(
            key.rsplit("_", 1)[0]
            for key in SimulatedGatewayRecord.objects.filter(kind="charge").values_list("idempotency_key", flat=True)
        )
        problems += [f"payment {key} charged {count} times" for key, count in charges.items() if count > 1]
        stuck = Job.objects.filter(
            status__in=(JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.RETRYING)
        ).count()
        if stuck:
            problems.append(f"{stuck} jobs still open")
        failed_jobs = Job.objects.filter(status=JobStatus.FAILED).count()
        if failed_jobs:
            problems.append(f"{failed_jobs} jobs failed for good")
        doubled_events = (
            PaymentEvent.objects.filter(payment__isnull=False)
            .values("payment", "from_status", "to_status")
            .annotate(n=Count("id"))
            .filter(n__gt=1)
            .count()
        )
        if doubled_events:
            problems.append(f"{doubled_events} payment events written twice")
        doubled_notifications = (
            Notification.objects.filter(resend_of__isnull=True)
            .values("payment", "event_type", "channel", "destination")
            .annotate(n=Count("id"))
            .filter(n__gt=1)
            .count()
        )
        if doubled_notifications:
            problems.append(f"{doubled_notifications} notifications created twice")
        webhooks = set(Notification.objects.filter(channel="webhook").values_list("event_id", flat=True))
        missing = webhooks - set(self.receiver.seen)
        if missing:
            problems.append(f"{len(missing)} webhooks never reached the receiver")
        noise = sum(django_rq.get_queue(name).failed_job_registry.count for name in QUEUES)
        if noise:
            problems.append(f"{noise} entries in RQ's failed registries")
        return problems

    def audit_safely(self) -> list[str]:
        try:
            return self.audit()
        except Exception as error:  # a service still down: say so rather than crash the run
            return [f"audit impossible: {type(error).__name__}: {error}"]

    def recover(self, fault_ended: float) -> float:
        deadline = fault_ended + RECOVERY_TIMEOUT
        while time.monotonic() < deadline:
            if self.settled():
                return time.monotonic() - fault_ended
            time.sleep(0.25)
        raise TimeoutError(f"not settled {RECOVERY_TIMEOUT:.0f} s after the fault")


# --- the scenarios: each returns the monotonic time its fault ended -------------------------------


def kill_workers_at_random(chaos: Chaos, size: int) -> float:
    chaos.create_payments(size)
    for _ in range(5):
        time.sleep(random.uniform(0.5, 1.5))
        random.choice(chaos.fleet.workers()).kill_payload()
    return time.monotonic()


def kill_right_after_dequeue(chaos: Chaos, size: int) -> float:
    doomed = chaos.fleet.start_worker(worker_class="tests.workers.DiesRightAfterTakingAJob")
    chaos.wait_for_workers([doomed])
    chaos.create_payments(size)  # it takes one, dies, is restarted, takes another...
    time.sleep(8)
    doomed.stop()
    chaos.fleet.processes.remove(doomed)
    return time.monotonic()


def redis_restart(chaos: Chaos, size: int) -> float:
    chaos.create_payments(size)
    time.sleep(0.5)
    chaos.redis.stop()  # its queues are lost with it
    chaos.redis.start()
    return time.monotonic()


def redis_down_while_creating(chaos: Chaos, size: int) -> float:
    chaos.redis.stop()
    chaos.create_payments(size)  # committed; their pushes fail and they stay pending
    time.sleep(2)
    chaos.redis.start()
    return time.monotonic()


def postgres_restart(chaos: Chaos, size: int) -> float:
    chaos.create_payments(size)
    time.sleep(0.5)
    chaos.postgres.restart()
    return time.monotonic()


def postgres_down(seconds: float):
    def scenario(chaos: Chaos, size: int) -> float:
        chaos.create_payments(size)
        time.sleep(0.5)
        chaos.postgres.stop()
        time.sleep(seconds)
        chaos.postgres.start()
        return time.monotonic()

    scenario.__name__ = f"postgres_down_{seconds:g}s"
    return scenario


def duplicate_deliveries(chaos: Chaos, size: int) -> float:
    chaos.create_payments(size)
    chaos.push_every_open_job_again(times=2)  # every job delivered three times
    return time.monotonic()


def webhook_receiver_down(chaos: Chaos, size: int) -> float:
    chaos.receiver.down = True
    chaos.create_payments(size)
    time.sleep(4)
    chaos.receiver.down = False
    return time.monotonic()


def nothing_restarts_the_processes(chaos: Chaos, size: int) -> float:
    """Bare processes, no supervisor: they must ride out a Redis and a PostgreSQL outage."""
    chaos.fleet.stop_all()
    bare = [chaos.fleet.start_worker(supervised=False) for _ in range(2)] + [
        chaos.fleet.start_sweeper(supervised=False)
    ]
    chaos.wait_for_workers(bare[:2])
    chaos.create_payments(size)
    time.sleep(0.3)
    chaos.redis.stop()
    time.sleep(3)
    chaos.redis.start()
    time.sleep(1)
    chaos.postgres.stop()
    time.sleep(3)
    chaos.postgres.start()
    ended = time.monotonic()
    chaos.create_payments(size // 2)
    dead = [process.name for process in bare if not process.alive()]
    if dead:
        raise AssertionError(f"exited during the outages: {', '.join(dead)}")
    return ended


FULL = [
    kill_workers_at_random,
    kill_right_after_dequeue,
    redis_restart,
    postgres_restart,
    postgres_down(10),
    redis_down_while_creating,
    duplicate_deliveries,
    webhook_receiver_down,
    nothing_restarts_the_processes,
]
SHORT = [kill_right_after_dequeue, redis_restart, postgres_down(5), nothing_restarts_the_processes]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="the CI subset, smaller batches")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--only", action="append", default=[], help="run only this scenario (repeatable)")
    parser.add_argument("--size", type=int, default=None, help="payments per scenario")
    args = parser.parse_args(argv)
    scenarios = SHORT if args.short else FULL
    if args.only:
        known = {scenario.__name__: scenario for scenario in FULL + SHORT}
        unknown = [name for name in args.only if name not in known]
        if unknown:
            parser.error(f"no scenario {', '.join(unknown)}; there are {', '.join(known)}")
        scenarios = [known[name] for name in args.only]
    size = args.size or (12 if args.short else 40)
    log_dir = ROOT / ".run" / "chaos"
    log_dir.mkdir(parents=True, exist_ok=True)
    results = []
    with own_services() as (postgres, redis):
        chaos = Chaos(postgres, redis, log_dir)
        try:
            chaos.setup()
            for round_number in range(1, args.repeat + 1):
                for scenario in scenarios:
                    name = scenario.__name__
                    print(f"[{round_number}] {name} ...", flush=True)
                    try:
                        chaos.standard_fleet()
                        fault_ended = scenario(chaos, size)
                        recovered_in = chaos.recover(fault_ended)
                        problems = chaos.audit()
                    except (AssertionError, TimeoutError) as error:
                        recovered_in, problems = None, [str(error), *chaos.audit_safely()]
                    results.append((round_number, name, recovered_in, problems))
                    verdict = "ok" if not problems else "FAILED: " + "; ".join(problems)
                    timing = f"recovered in {recovered_in:.1f} s" if recovered_in is not None else "did not recover"
                    print(f"[{round_number}] {name}: {timing}, {verdict}", flush=True)
        finally:
            chaos.fleet.stop_all()
            chaos.receiver.shutdown()
    failed = [result for result in results if result[3]]
    print(
        f"\n{len(results) - len(failed)} of {len(results)} scenario runs recovered and passed the audit "
        f"(logs in {log_dir})"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
