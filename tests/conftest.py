import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import django_rq
import pytest
from django.conf import settings

from backoffice.embedded_redis import start_redis_server
from payments import services
from payments.jobs import process_payment
from payments.models import Membership
from payments.states import PaymentStatus
from processor.launch import ProcessorProcess
from tests.factories import MerchantFactory, UserFactory
from tests.helpers import IN_CI, PROCFILE_WORKER_CLASS, ROOT, logged_in, merchant_user, wait_until, worker_environment

_embedded_redis = None


def pytest_configure(config):
    global _embedded_redis
    if os.environ.get("PAYDESK_TEST_EMBEDDED_REDIS") and os.environ.get("PYTEST_XDIST_WORKER", "gw0") == "gw0":
        socket_path = ROOT / ".run" / "test-redis.sock"
        socket_path.unlink(missing_ok=True)
        _embedded_redis = start_redis_server(socket_path)
        for _ in range(100):
            if socket_path.exists():
                break
            time.sleep(0.05)


def pytest_unconfigure(config):
    if _embedded_redis is not None:
        _embedded_redis.terminate()
        _embedded_redis.wait(5)


def pytest_collection_modifyitems(config, items):
    if not settings.USING_SQLITE:
        return
    reason = "needs PostgreSQL (row locks / SELECT FOR UPDATE); this run uses SQLite because DATABASE_URL is unset"
    if IN_CI:
        raise pytest.UsageError("CI=true but DATABASE_URL is not PostgreSQL: nothing may be skipped in CI.")
    for item in items:
        if "needs_postgres" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True)
def _clean_redis():
    """Every test starts with empty queues in its own Redis database."""
    django_rq.get_connection("default").flushdb()
    yield


@pytest.fixture
def merchant(db):
    return MerchantFactory()


@pytest.fixture
def operator(db):
    return UserFactory(username="olivia-operator", roles=["Operators"])


@pytest.fixture
def viewer(db):
    return UserFactory(username="victor-viewer", roles=["Viewers"])


@pytest.fixture
def make_payment(merchant):
    """Create a payment the way the product does: through payment_create."""
    counter = iter(range(1, 10_000))

    def make(**overrides):
        params = {
            "merchant": merchant,
            "amount_minor": 1250,
            "currency": "EUR",
            "payment_method": "tok_success",
            "idempotency_key": f"test-{next(counter)}-{secrets.token_urlsafe(8)}",
        }
        params.update(overrides)
        return services.payment_create(**params)[0]

    return make


@pytest.fixture
def operator_client(operator):
    return logged_in(operator)


@pytest.fixture
def viewer_client(viewer):
    return logged_in(viewer)


# --- the merchant portal ------------------------------------------------------------------


@pytest.fixture
def other_merchant(db):
    return MerchantFactory(name="Other Shop", slug="other-shop")


@pytest.fixture
def owner(merchant):
    return merchant_user("olga-owner", merchant, Membership.Role.OWNER)


@pytest.fixture
def member(merchant):
    return merchant_user("mike-member", merchant, Membership.Role.MEMBER)


@pytest.fixture
def owner_client(owner):
    return logged_in(owner)


@pytest.fixture
def member_client(member):
    return logged_in(member)


@pytest.fixture
def captured(make_payment):
    """A payment that went through the gateway and succeeded (100.00 EUR unless told)."""

    def make(**overrides):
        payment = make_payment(**{"amount_minor": 100_00, **overrides})
        process_payment(payment.pk)
        payment.refresh_from_db()
        assert payment.status == PaymentStatus.SUCCEEDED
        return payment

    return make


@pytest.fixture
def other_payment(other_merchant, make_payment, captured):
    """A succeeded payment of the other merchant."""
    return captured(merchant=other_merchant, merchant_reference="theirs-1", customer_email="secret@their.example")


def _session_members(session_id: int) -> list[int]:
    """Live processes of a session (Linux /proc): rq's work-horse moves to its own process group
    (os.setpgrp), so killing the worker's group alone would leave the horse running."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, _ppid, _pgrp, session = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:4]
        except (OSError, ValueError):
            continue
        if int(session) == session_id and state != "Z":
            members.append(int(entry.name))
    return members


class WorkerProcess:
    """A real `manage.py rqworker` process for end-to-end and fault tests. `worker_class` picks
    rq's worker (a dotted path, e.g. "rq.worker.SimpleWorker"); by default the Procfile's."""

    def __init__(self, *queues: str, burst: bool = False, worker_class: str | None = None, **env):
        queues = queues or ("payments", "notifications", "default")
        command = [sys.executable, str(ROOT / "manage.py"), "rqworker", *queues]
        command += ["--burst"] if burst else ["--with-scheduler"]
        command += ["--worker-class", worker_class or PROCFILE_WORKER_CLASS]
        self.log_path = ROOT / ".run" / f"test-worker-{os.getpid()}-{time.monotonic_ns()}.log"
        self.log_path.parent.mkdir(exist_ok=True)
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command,
            env=worker_environment(**env),
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL the worker and its work-horse children, as an OOM killer or a power cut would;
        returns once none of them is left running."""
        if Path("/proc").is_dir():
            wait_until(lambda: not self._kill_session(), timeout=10, message="the worker's processes to die")
        elif self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def _kill_session(self) -> list[int]:
        members = _session_members(self.process.pid)
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return members

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                pass
        self.kill()  # whatever is left, a work-horse included
        self.log.close()

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")


# A "timed out" answer is held this long by the test processors; the clients give up after
# PROCESSOR_TEST_READ_TIMEOUT, which must exceed an honest answer's time on a busy machine
# (a refund that times out is retried only by the sweeper, which not every test runs).
PROCESSOR_TEST_BEHAVIOUR = {"PROCESSOR_HANG_SECONDS": 20}
PROCESSOR_TEST_READ_TIMEOUT = 5.0


def point_gateway_at(settings, processor: ProcessorProcess, *, read_timeout: float = PROCESSOR_TEST_READ_TIMEOUT):
    settings.PAYMENTS_GATEWAY = "payments.gateways.http.HttpGateway"
    settings.PAYMENTS_PROCESSOR_URL = processor.url
    settings.PAYMENTS_PROCESSOR_READ_TIMEOUT_SECONDS = read_timeout
    settings.PAYMENTS_PROCESSOR_CONNECT_TIMEOUT_SECONDS = 1.0


@pytest.fixture(scope="session")
def shared_processor():
    """One processor service (latency 0) for the tests of this pytest process."""
    processor = ProcessorProcess(**PROCESSOR_TEST_BEHAVIOUR).start()
    yield processor
    processor.stop()


@pytest.fixture
def http_processor(shared_processor, settings) -> ProcessorProcess:
    """The app (this process and the workers it starts) charges through the HTTP processor."""
    point_gateway_at(settings, shared_processor)
    return shared_processor


@pytest.fixture
def start_processor(settings):
    """Start a processor of this test's own with the given PROCESSOR_* behaviour and point
    the app at it; `read_timeout` is the clients' (raise it above a slow processor's latency)."""
    processors: list[ProcessorProcess] = []

    def start(*, read_timeout: float = PROCESSOR_TEST_READ_TIMEOUT, **behaviour) -> ProcessorProcess:
        processor = ProcessorProcess(**{**PROCESSOR_TEST_BEHAVIOUR, **behaviour}).start()
        processors.append(processor)
        point_gateway_at(settings, processor, read_timeout=read_timeout)
        return processor

    yield start
    for processor in processors:
        processor.stop()


@pytest.fixture
def start_worker():
    workers: list[WorkerProcess] = []

    def start(*queues: str, **env) -> WorkerProcess:
        worker = WorkerProcess(*queues, **env)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
