"""Bulk actions as background jobs. An admin action on more than ADMIN_BULK_JOB_THRESHOLD
objects enqueues one Job that works through the ids in chunks of BULK_ACTION_CHUNK_SIZE; the
request answers at once with a link to that Job's page, which shows the progress and the
outcome per object (backoffice.progress).

A chunk handler is a function, named by its dotted path, that acts on a chunk of ids in one
transaction with bulk writes and says what it did to each:

    def payments_retry_many(*, ids: Sequence[int | str], actor: Actor, reason: str) -> dict[str, ObjectOutcome]

keyed by str(id). An id missing from its answer is reported as "no longer exists". Each chunk's writes and its
progress commit together, so a retried job resumes after the last committed chunk and acts on
no object twice; a handler must still check each object's state (it is idempotent like every
job body).
"""

from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils.module_loading import import_string

from backoffice.actors import Actor, actor_user
from backoffice.models import Job
from backoffice.progress import ObjectOutcome, job_progress
from backoffice.services import job_enqueue

BULK_JOB = "backoffice.bulk.bulk_action_run"
GONE = "no longer exists"


def bulk_action_enqueue(*, handler: str, ids: Sequence[int | str], reason: str, requested_by: Actor, verb: str) -> Job:
    """Write one Job that will run `handler` over `ids` in chunks, in the caller's transaction."""
    import_string(handler)  # a typo fails here, in the request, not later in a worker
    return job_enqueue(
        func=BULK_JOB,
        kwargs={
            "handler": handler,
            "ids": list(ids),
            "actor_id": user.pk if (user := actor_user(requested_by)) else None,
            "reason": reason,
            "verb": verb,
        },
        queue="default",
        requested_by=requested_by,
        # A bulk action resumes where it stopped: a few attempts are enough.
        max_attempts=3,
    )


def bulk_action_run(
    *, handler: str, ids: list[int | str], actor_id: int | None, reason: str, verb: str = ""
) -> dict[str, Any]:
    """Run a bulk action's handler over its ids chunk by chunk, reporting progress per chunk."""
    act = import_string(handler)
    actor = get_user_model().objects.filter(pk=actor_id).first() if actor_id is not None else None
    progress = job_progress(total=len(ids))
    size = settings.BULK_ACTION_CHUNK_SIZE
    for start in range(progress.done, len(ids), size):
        chunk = ids[start : start + size]
        with transaction.atomic():
            outcomes = act(ids=chunk, actor=actor, reason=reason)
            progress.record_outcomes(outcomes.get(str(pk)) or ObjectOutcome(str(pk), skipped=GONE) for pk in chunk)
    return progress.summary()
