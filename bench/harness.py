"""What the benchmark scripts share: their own PostgreSQL database and Redis database, Django
set up on them, batches of payments under a throwaway merchant, and cleaning all of it up.

Import order matters: call `configure()` before anything imports Django models.
"""

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/paydesk"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
BENCH_REDIS_DB = 5
QUEUE = "payments"
QUEUES = ("payments", "notifications", "default")


def bench_database_url(url: str | None) -> str:
    """The given DATABASE_URL's server with a database of its own: paydesk -> paydesk_bench."""
    parts = urlsplit(url or DEFAULT_DATABASE_URL)
    if not parts.scheme.startswith("postgres"):
        sys.exit(f"bench: needs PostgreSQL (row locks, as in production); DATABASE_URL is {parts.scheme}://...")
    name = parts.path.lstrip("/") or "paydesk"
    if not name.endswith("_bench"):
        name += "_bench"
    return urlunsplit(parts._replace(path=f"/{name}"))


def bench_redis_url(url: str | None) -> str:
    """The given REDIS_URL's server with database 5, away from `make run` (0) and the tests (10+,
    though a test run with PAYDESK_TEST_REDIS_DB and pytest-xdist can land on it: see --own-redis)."""
    parts = urlsplit(url or DEFAULT_REDIS_URL)
    if parts.scheme not in ("redis", "rediss"):
        sys.exit(f"bench: needs a Redis server over TCP; REDIS_URL is {parts.scheme}://...")
    return urlunsplit(parts._replace(path=f"/{BENCH_REDIS_DB}", query=""))


def start_own_redis() -> tuple[str, subprocess.Popen]:
    """A private redis-server on a free TCP port, without persistence: no test suite that
    flushes its database can empty our queues halfway through a drain. Stop it when done."""
    from backoffice.embedded_redis import redis_server_binary, redis_server_command  # no Django in it

    binary = redis_server_binary(prefer_installed=True)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        redis_server_command(binary=binary, directory=Path(tempfile.gettempdir()), port=port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as connection:
                connection.sendall(b"PING\r\n")
                if connection.recv(16).startswith(b"+PONG"):
                    return f"redis://127.0.0.1:{port}/0", server
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            sys.exit(f"bench: could not start {binary} on port {port}")
        time.sleep(0.05)


@contextmanager
def bench_redis(*, own: bool, url: str | None) -> Iterator[str]:
    """The Redis URL to use: a private server for the duration (own), else `url`, else
    REDIS_URL's server with the bench database."""
    if not own:
        yield url or bench_redis_url(os.environ.get("REDIS_URL"))
        return
    own_url, server = start_own_redis()
    try:
        yield own_url
    finally:
        server.terminate()
        server.wait()


def configure(*, database_url: str, redis_url: str, gateway_latency_ms: int = 0) -> None:
    """Point this process, and the workers it starts, at the bench databases; set Django up;
    create and migrate the database if needed. DEBUG is off, as in production: with it on,
    Django would keep every query in memory and tax the pipeline that makes the most."""
    os.environ.update(
        DJANGO_SETTINGS_MODULE="backoffice.settings",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY=os.environ.get("PAYDESK_BENCH_SECRET_KEY") or secrets.token_urlsafe(50),
        PAYMENTS_GATEWAY_LATENCY_MS=str(gateway_latency_ms),
    )
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    _create_database_if_missing(database_url)

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)


def _create_database_if_missing(database_url: str) -> None:
    import psycopg2
    from psycopg2 import sql

    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    try:
        server = psycopg2.connect(urlunsplit(parts._replace(path="/postgres")))
    except psycopg2.OperationalError as error:
        sys.exit(f"bench: PostgreSQL at {parts.hostname}:{parts.port or 5432} does not answer: {error}")
    server.autocommit = True
    with server.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cursor.fetchone() is None:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    server.close()


def bench_queue(name: str = QUEUE):
    import django_rq

    return django_rq.get_queue(name)


def refuse_shared_queues() -> set[str]:
    """Exit if anyone else uses the bench's Redis database: their worker would steal our jobs
    and ours would run theirs. Returns the queues RQ already knew, which we then leave be."""
    from rq import Worker

    connection = bench_queue().connection
    for name in QUEUES:
        queue = bench_queue(name)
        workers = Worker.all(queue=queue)
        if queue.count or workers:
            sys.exit(
                f"bench: queue {name!r} on {os.environ['REDIS_URL']} has {queue.count} jobs and "
                f"{len(workers)} workers; stop them or pass another --redis-url."
            )
    return {queue.name for queue in type(bench_queue()).all(connection=connection)}


def forget_queues(known_before: set[str]) -> None:
    """Unregister the queues that the bench's jobs made RQ register, once they are empty."""
    for name in QUEUES:
        queue = bench_queue(name)
        if name not in known_before and queue.is_empty():
            queue.delete(delete_jobs=False)


@dataclass
class Batch:
    """One measurement's payments, under a merchant of their own, and its RQ job ids."""

    label: str
    merchant: object
    rq_job_ids: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, label: str) -> "Batch":
        from payments.models import Merchant

        slug = f"bench-{label}-{secrets.token_hex(4)}"
        return cls(label, Merchant.objects.create(name=slug, slug=slug, contact_email="bench@example.com"))

    def idempotency_key(self, index: int) -> str:
        return f"{self.merchant.slug}-{index}"

    def payments(self):
        from payments.models import Payment

        return Payment.objects.filter(merchant=self.merchant)

    def delete(self) -> None:
        """Delete exactly what this batch made, in Redis and in the database."""
        from payments.models import Merchant, PaymentAttempt, SimulatedGatewayRecord

        # The simulated gateway's ledger is keyed by the attempts' idempotency keys, not by a foreign key.
        attempt_keys = PaymentAttempt.objects.filter(payment__merchant=self.merchant).values("idempotency_key")
        SimulatedGatewayRecord.objects.filter(idempotency_key__in=attempt_keys).delete()
        job_ids: list[str] = []
        with ledger_triggers_off():
            _delete_with_dependents(Merchant.objects.filter(pk=self.merchant.pk), job_ids=job_ids, path=())
        _delete_rq_jobs(self.rq_job_ids + job_ids)


@contextmanager
def ledger_triggers_off():
    """A transaction in which PostgreSQL fires no triggers (superuser only): the ledger's
    entries are immutable by trigger, and the bench's throwaway ones must go with their
    merchant. Foreign keys are not checked either, so delete dependents first (as above)."""
    from django.db import connection, transaction

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL session_replication_role = replica")
        yield


def _delete_with_dependents(queryset, *, job_ids: list[str], path: tuple) -> None:
    """Delete these rows after every row that refers to them by a foreign key, whatever its
    on_delete (events and attempts are PROTECTed), and the backoffice Jobs that concern any
    of them: payments, and whatever other apps hang on payments (notifications, refunds)."""
    from django.contrib.contenttypes.models import ContentType

    from backoffice.models import Job

    model = queryset.model
    pks = list(queryset.values_list("pk", flat=True))
    if not pks:
        return
    # include_hidden: a foreign key with related_name="+" (Notification.payment_event) protects too.
    for relation in model._meta.get_fields(include_hidden=True):
        if not (relation.auto_created and not relation.concrete and (relation.one_to_many or relation.one_to_one)):
            continue
        if relation.related_model in path or relation.related_model is model:
            continue
        dependents = relation.related_model._base_manager.filter(**{f"{relation.field.name}__in": pks})
        _delete_with_dependents(dependents, job_ids=job_ids, path=(*path, model))
    if model is not Job:
        jobs = Job.objects.filter(
            content_type=ContentType.objects.get_for_model(model), object_id__in=[str(pk) for pk in pks]
        )
        job_ids += [str(pk) for pk in jobs.values_list("pk", flat=True)]
        jobs.delete()
    model._base_manager.filter(pk__in=pks).delete()


def _delete_rq_jobs(rq_job_ids: list[str]) -> None:
    """Take these jobs off their queues and registries and delete them and their results."""
    from rq.job import Job as RQJob
    from rq.results import Result

    connection = bench_queue().connection
    for start in range(0, len(rq_job_ids), 500):
        chunk = rq_job_ids[start : start + 500]
        with connection.pipeline() as pipeline:
            for rq_job in RQJob.fetch_many(chunk, connection=connection):
                if rq_job is not None:
                    rq_job.delete(pipeline=pipeline)
            pipeline.delete(*(Result.get_key(job_id) for job_id in chunk))
            pipeline.execute()
