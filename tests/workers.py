"""Worker classes for fault tests only (passed to a real `manage.py rqworker --worker-class`)."""

import os
import signal

from django.utils.module_loading import import_string

from tests.helpers import PROCFILE_WORKER_CLASS


class DiesRightAfterTakingAJob(import_string(PROCFILE_WORKER_CLASS)):
    """The Procfile's worker, SIGKILLed at the worst instant of RQ's dequeue path: it has popped
    a job id from its queue list and RQ has not yet marked the job started (the Redis hash
    still says `queued`, and the id is in no queue list)."""

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        taken = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        if taken is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return taken
