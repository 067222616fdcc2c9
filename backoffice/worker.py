"""The worker class Paydesk runs (`rqworker ... --worker-class backoffice.worker.Worker`)."""

import logging
import time

from rq import worker_registration
from rq.exceptions import StopRequested
from rq.worker import SimpleWorker
from rq.worker.base import WorkerStatus

from backoffice.outages import REDIS_UNREACHABLE, Outage, describe

logger = logging.getLogger(__name__)


class Worker(SimpleWorker):
    """rq's SimpleWorker (jobs run in the worker process: docs/benchmarks.md says why) that
    outlives a Redis outage of any length. Where rq would log "found an unhandled exception,
    quitting..." and exit, this worker logs one line, waits with back-off until Redis answers,
    registers itself again (a restarted Redis forgot it) and carries on.

    A job in hand when Redis went away is not lost either way: if our runner finished it, the
    Job row says so; if RQ could not start it, the row is still `queued` and in no queue list,
    and the sweeper re-pushes it after JOBS_QUEUED_GRACE_SECONDS.
    A PostgreSQL outage is the runner's to ride out (backoffice.runner)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._redis_outage = Outage("Redis")

    # --- where rq's loop talks to Redis outside its own dequeue retry ---------------------------

    def heartbeat(self, timeout=None, pipeline=None):
        if pipeline is not None:  # part of a caller's pipeline: the caller's try
            return super().heartbeat(timeout, pipeline=pipeline)
        self._until_it_works(lambda: super(Worker, self).heartbeat(timeout), "sending its heartbeat")
        # A Redis that restarted while rq's own dequeue retry waited (so no outage reached us)
        # has forgotten this worker: the beat above left a hash with no birth. Register again,
        # or the worker works on unseen by the dashboard, the probes and the chaos audit.
        self._until_it_works(self._register_if_forgotten, "checking its registration")

    def _register_if_forgotten(self) -> None:
        if not self.connection.hexists(self.key, "birth"):
            self._register_again()

    def check_for_suspension(self, burst: bool):
        return self._until_it_works(lambda: super(Worker, self).check_for_suspension(burst), "checking for suspension")

    def run_maintenance_tasks(self):
        try:
            super().run_maintenance_tasks()
        except REDIS_UNREACHABLE as error:
            self._wait_for_redis(error, "cleaning RQ's registries")  # skipped this time; due again soon

    def execute_job(self, job, queue):
        try:
            super().execute_job(job, queue)
        except REDIS_UNREACHABLE as error:
            # Not retried here: whether it ran is the Job row's to say (see the class docstring).
            self._wait_for_redis(error, f"handling job {job.id}")
            self._redis_call(lambda: self.set_state(WorkerStatus.IDLE))

    def teardown(self):
        try:
            super().teardown()
        except REDIS_UNREACHABLE as error:
            logger.warning("Worker %s: stopping unregistered (Redis unreachable: %s)", self.name, describe(error))

    def _pubsub_exception_handler(self, exc, pubsub, pubsub_thread):
        # rq logs every 2 s while Redis is down; one line per outage is enough.
        if not isinstance(exc, REDIS_UNREACHABLE):
            return super()._pubsub_exception_handler(exc, pubsub, pubsub_thread)
        time.sleep(min(5.0, self._redis_outage.failed(exc, f"{self.name} was listening for commands")))
        return None

    # --- riding out ---------------------------------------------------------------------------

    def _until_it_works(self, call, doing: str):
        while True:
            try:
                result = call()
            except REDIS_UNREACHABLE as error:
                self._wait_for_redis(error, doing)
                continue
            return result

    def _redis_call(self, call) -> None:
        try:
            call()
        except REDIS_UNREACHABLE as error:
            self._wait_for_redis(error, "updating its state")

    def _wait_for_redis(self, error: BaseException, doing: str) -> None:
        """Back off until Redis answers a ping, then register this worker again; a stop
        request (SIGTERM, Ctrl-C) ends the wait."""
        while True:
            if self._stop_requested:
                raise StopRequested()
            time.sleep(self._redis_outage.failed(error, f"{self.name} was {doing}"))
            try:
                self.connection.ping()
                self._register_again()
            except REDIS_UNREACHABLE as again:
                error = again
                continue
            self._redis_outage.ended()
            return

    def _register_again(self) -> None:
        with self.connection.pipeline() as pipeline:
            pipeline.hset(self.key, mapping=self.serialize())
            pipeline.hdel(self.key, "death")
            worker_registration.register(self, pipeline)
            pipeline.expire(self.key, self.worker_ttl + 60)
            pipeline.execute()
