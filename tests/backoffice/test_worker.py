"""backoffice.worker.Worker against the real Redis: what it does when Redis forgets it."""

import django_rq
from rq import Worker as RQWorker

from backoffice.worker import Worker


def test_a_worker_that_redis_forgot_registers_again_on_its_next_heartbeat():
    # given a registered worker
    connection = django_rq.get_connection("payments")
    worker = Worker([django_rq.get_queue("payments")], connection=connection)
    worker.register_birth()
    assert worker.name in {w.name for w in RQWorker.all(connection=connection)}

    # when Redis restarts empty (its queues and the worker registry lost) under rq's own
    # dequeue retry, so no outage reached our code, and the worker then beats
    connection.flushdb()
    worker.heartbeat()

    # then it is listed again, with its birth, as the dashboard and the probes expect
    assert worker.name in {w.name for w in RQWorker.all(connection=connection)}
    assert connection.hexists(worker.key, "birth")
    worker.register_death()


def test_a_registered_worker_beats_without_registering_again():
    connection = django_rq.get_connection("payments")
    worker = Worker([django_rq.get_queue("payments")], connection=connection)
    worker.register_birth()
    birth = connection.hget(worker.key, "birth")

    worker.heartbeat()

    assert connection.hget(worker.key, "birth") == birth
    worker.register_death()
