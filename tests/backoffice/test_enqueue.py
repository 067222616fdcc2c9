"""The one enqueue helper: a committed job is never lost, a rolled-back one never runs."""

import socket
import subprocess
from datetime import timedelta

import django_rq
import pytest
from django.db import transaction
from django.utils import timezone
from redis import Redis
from redis.exceptions import RedisError
from rq import SimpleWorker
from rq.job import Job as RQJob

from backoffice import services as backoffice_services
from backoffice.embedded_redis import redis_server_binary, redis_server_command
from backoffice.models import Job, JobStatus
from backoffice.services import QUEUES, job_enqueue
from backoffice.sweeper import jobs_sweep
from payments.models import Payment, SimulatedGatewayRecord
from payments.states import PaymentStatus
from tests.helpers import wait_until


def processing_job(payment: Payment) -> Job:
    return Job.objects.get(func="payments.jobs.process_payment", object_id=str(payment.pk))


def queued_job_ids() -> dict[str, list[str]]:
    return {name: django_rq.get_queue(name).job_ids for name in QUEUES}


def nothing_in_redis() -> bool:
    connection = django_rq.get_connection("default")
    return all(not ids for ids in queued_job_ids().values()) and not connection.keys("rq:job:*")


@pytest.mark.django_db
def test_nothing_reaches_redis_before_commit(make_payment, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        payment = make_payment()
        job = processing_job(payment)
        assert job.status == JobStatus.PENDING
        assert nothing_in_redis()

    assert callbacks
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.queued_at is not None
    assert queued_job_ids()["payments"] == [str(job.pk)]
    rq_job = RQJob.fetch(str(job.pk), connection=django_rq.get_connection("payments"))
    assert (rq_job.func_name, rq_job.args) == ("backoffice.runner.run_job", (str(job.pk),))


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_enqueues_nothing_and_leaves_no_job(make_payment):
    with pytest.raises(RuntimeError, match="the caller failed after enqueueing"), transaction.atomic():
        processing_job(make_payment())
        raise RuntimeError("the caller failed after enqueueing")

    assert not Job.objects.exists()
    assert not Payment.objects.exists()
    assert nothing_in_redis()


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_savepoint_drops_its_job_and_keeps_the_rest(make_payment):
    with transaction.atomic():
        kept = make_payment()
        with pytest.raises(RuntimeError), transaction.atomic():
            make_payment()
            raise RuntimeError("inner step failed")

    job = Job.objects.get(func="payments.jobs.process_payment")
    assert job.object_id == str(kept.pk) and job.status == JobStatus.QUEUED
    assert queued_job_ids()["payments"] == [str(job.pk)]
    assert Payment.objects.get() == kept


@pytest.mark.django_db(transaction=True)
def test_a_job_due_later_is_not_pushed_at_commit_but_by_the_sweeper_once_due():
    job = job_enqueue(
        func="tests.backoffice.test_runner.record_call", kwargs={}, run_at=timezone.now() + timedelta(hours=1)
    )
    assert Job.objects.get(pk=job.pk).status == JobStatus.PENDING
    assert jobs_sweep().pushed == 0

    Job.objects.filter(pk=job.pk).update(run_at=timezone.now())  # an hour later
    assert jobs_sweep().pushed == 1

    assert queued_job_ids()["default"] == [str(job.pk)]


@pytest.mark.django_db(transaction=True)
def test_an_unexpected_push_error_neither_breaks_the_caller_nor_loses_the_job(monkeypatch):
    def broken_push(**kwargs):
        raise TypeError("cannot pickle")

    monkeypatch.setattr(backoffice_services, "job_push_rollback_unsafe", broken_push)
    after_commit = []
    with transaction.atomic():
        job = job_enqueue(func="tests.backoffice.test_runner.record_call", kwargs={})
        transaction.on_commit(lambda: after_commit.append("the caller's own work"))

    assert after_commit == ["the caller's own work"]
    assert Job.objects.get(pk=job.pk).status == JobStatus.PENDING  # for the sweeper
    monkeypatch.undo()
    assert jobs_sweep().pushed == 1


@pytest.mark.django_db
def test_enqueue_refuses_an_unknown_queue_and_arguments_json_cannot_carry():
    with pytest.raises(ValueError, match="Unknown queue 'urgent'"):
        job_enqueue(func="tests.backoffice.test_runner.record_call", kwargs={}, queue="urgent")
    with pytest.raises(TypeError):
        job_enqueue(func="tests.backoffice.test_runner.record_call", kwargs={"when": timezone.now()})
    assert not Job.objects.exists()


# --- Redis down at commit ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """A throwaway redis-server on its own port, so the test can stop and start it."""

    def __init__(self, directory):
        self.port = _free_port()
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            redis_server_command(
                binary=redis_server_binary(prefer_installed=True), directory=self.directory, port=self.port
            ),
            stdout=subprocess.DEVNULL,
        )
        wait_until(self.answers, timeout=20, message=f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        assert not self.answers()

    def answers(self) -> bool:
        try:
            return Redis.from_url(self.url, socket_timeout=1).ping()
        except (RedisError, OSError):
            return False


@pytest.fixture
def own_redis(tmp_path, settings):
    """django-rq pointed at a Redis of this test's own (django-rq reads RQ_QUEUES on every
    call and keeps no connection cache, so overriding the setting is enough)."""
    server = RedisServer(tmp_path)
    server.start()
    settings.RQ_QUEUES = {name: {**config, "URL": server.url} for name, config in settings.RQ_QUEUES.items()}
    yield server
    server.stop()


@pytest.mark.needs_redis_server
@pytest.mark.django_db(transaction=True)
def test_a_job_committed_while_redis_is_down_stays_pending_and_the_sweeper_delivers_it_once(own_redis, make_payment):
    own_redis.stop()

    payment = make_payment()  # commits; its on-commit push finds no Redis

    job = processing_job(payment)
    assert job.status == JobStatus.PENDING
    report = jobs_sweep()
    assert report.redis_down and report.pushed == 0
    assert Job.objects.get(pk=job.pk).status == JobStatus.PENDING

    own_redis.start()
    assert jobs_sweep().pushed == Job.objects.count()  # this one, and any notification of the payment

    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED
    assert queued_job_ids()["payments"] == [str(job.pk)]
    worker = SimpleWorker([django_rq.get_queue("payments")], connection=django_rq.get_connection("payments"))
    assert worker.work(burst=True)
    job.refresh_from_db()
    payment.refresh_from_db()
    assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 1)
    assert payment.status == PaymentStatus.SUCCEEDED
    assert SimulatedGatewayRecord.objects.count() == 1
    assert django_rq.get_queue("payments").count == 0
    assert jobs_sweep().pushed == 0  # delivered once: nothing left behind to push


@pytest.fixture
def hung_redis(settings):
    """A 'Redis' that accepts connections and never answers, as a wedged server or a
    half-open network path does."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    settings.RQ_QUEUES = {name: {**config, "URL": url} for name, config in settings.RQ_QUEUES.items()}
    settings.REDIS_PUSH_TIMEOUT_SECONDS = 0.5
    yield
    listener.close()


@pytest.mark.django_db(transaction=True)
def test_a_hung_redis_delays_the_commit_by_the_push_timeout_only_and_the_job_stays_pending(hung_redis, make_payment):
    import time

    started = time.monotonic()
    payment = make_payment()
    elapsed = time.monotonic() - started
    assert elapsed < 5, f"the request waited {elapsed:.1f}s on a hung Redis"
    assert processing_job(payment).status == JobStatus.PENDING
    report = jobs_sweep()
    assert report.redis_down and processing_job(payment).status == JobStatus.PENDING


@pytest.mark.django_db(transaction=True)
def test_each_queue_gives_its_jobs_its_own_time_limit(settings):
    settings.RQ_QUEUES = {
        **settings.RQ_QUEUES,
        "notifications": {**settings.RQ_QUEUES["notifications"], "DEFAULT_TIMEOUT": 45},
    }
    webhook = job_enqueue(func="notifications.jobs.deliver_notification", kwargs={"x": 1}, queue="notifications")
    charge = job_enqueue(func="payments.jobs.process_payment", kwargs={"payment_id": 0}, queue="payments")
    connection = django_rq.get_connection("default")
    assert RQJob.fetch(str(webhook.pk), connection=connection).timeout == 45
    assert RQJob.fetch(str(charge.pk), connection=connection).timeout == settings.JOB_TIMEOUT_SECONDS
