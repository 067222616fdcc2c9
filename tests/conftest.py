import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import django_rq
import pytest
from django.conf import settings
from django.db import connection

from backoffice.embedded_redis import start_redis_server
from payments import services
from tests.factories import MerchantFactory, UserFactory

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
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
            "idempotency_key": f"test-{next(counter)}-{time.monotonic_ns()}",
        }
        params.update(overrides)
        return services.payment_create(**params)

    return make


def worker_environment(**extra) -> dict:
    """The environment a worker subprocess needs to see this test's database and Redis."""
    env = dict(os.environ)
    db = connection.settings_dict
    if settings.USING_SQLITE:
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    else:
        env["DATABASE_URL"] = (
            f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        )
    env["REDIS_URL"] = settings.REDIS_URL
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env.update({key: str(value) for key, value in extra.items()})
    return env


class WorkerProcess:
    """A real `manage.py rqworker` process for end-to-end and fault tests."""

    def __init__(self, *queues: str, burst: bool = False, **env):
        command = [sys.executable, str(ROOT / "manage.py"), "rqworker", *(queues or ("payments", "notifications", "default"))]
        command += ["--burst"] if burst else ["--with-scheduler"]
        self.log_path = ROOT / ".run" / f"test-worker-{os.getpid()}-{time.monotonic_ns()}.log"
        self.log_path.parent.mkdir(exist_ok=True)
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command, env=worker_environment(**env), cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL the worker and its work-horse children, as an OOM killer or a power cut would."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")


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


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")
