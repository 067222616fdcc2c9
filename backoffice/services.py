"""Writes of the back office: the one enqueue helper, job requeue/cancel, the audit trail."""

import json
import logging
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Any
from uuid import UUID

import django_rq
import redis
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone
from redis.exceptions import RedisError
from rq import Queue

from backoffice.actors import Actor, actor_user
from backoffice.db import insert_rows
from backoffice.models import AuditEntry, Job, JobStatus
from backoffice.progress import ObjectOutcome

logger = logging.getLogger(__name__)

RUNNER = "backoffice.runner.run_job"
QUEUES = ("payments", "notifications", "default")


def job_enqueue(
    *,
    func: str,
    kwargs: dict,
    queue: str = "default",
    concerns: models.Model | None = None,
    requested_by: Actor = None,
    max_attempts: int | None = None,
    run_at: datetime | None = None,
) -> Job:
    """Write a pending Job in the caller's transaction; push it to RQ once that commits.

    A rolled-back transaction never pushes; if Redis is down at commit the row stays
    `pending` and the sweeper pushes it later.
    """
    if queue not in QUEUES:
        raise ValueError(f"Unknown queue {queue!r}; expected one of {', '.join(QUEUES)}.")
    # Arguments are ids and plain values: refuse anything JSON cannot carry unchanged.
    json.dumps(kwargs)
    now = timezone.now()
    job = Job.objects.create(
        func=func,
        kwargs=kwargs,
        queue=queue,
        status=JobStatus.PENDING,
        max_attempts=max_attempts or settings.JOBS_DEFAULT_MAX_ATTEMPTS,
        run_at=run_at or now,
        content_type=ContentType.objects.get_for_model(concerns) if concerns is not None else None,
        object_id=str(concerns.pk) if concerns is not None else "",
        requested_by=actor_user(requested_by),
    )
    if job.run_at <= now:
        # robust: a push that fails for any reason must neither break the caller's other
        # on-commit work nor lose the job (the row stays pending for the sweeper).
        transaction.on_commit(lambda: job_push_after_commit(job_id=job.id, queue=queue), robust=True)
    return job


def job_enqueue_many(
    *,
    func: str,
    kwargs_list: list[dict],
    queue: str = "default",
    concerns: Sequence[models.Model] | None = None,
    requested_by: Actor = None,
) -> list[UUID]:
    """job_enqueue for many jobs of one function at once: one INSERT for the rows in the
    caller's transaction and, once that commits, one Redis pipeline for the pushes. Returns
    the new Jobs' ids. `concerns`, when given, holds one object per kwargs (all of one model)."""
    if queue not in QUEUES:
        raise ValueError(f"Unknown queue {queue!r}; expected one of {', '.join(QUEUES)}.")
    if not kwargs_list:
        return []
    json.dumps(kwargs_list)
    if concerns is not None and len(concerns) != len(kwargs_list):
        raise ValueError("concerns must hold one object per job")
    content_type = ContentType.objects.get_for_model(concerns[0]) if concerns else None
    requester = actor_user(requested_by)
    job_ids = insert_rows(
        Job,
        each={
            "kwargs": kwargs_list,
            "object_id": [str(obj.pk) for obj in concerns] if concerns else [""] * len(kwargs_list),
        },
        same={
            "func": func,
            "queue": queue,
            "status": JobStatus.PENDING,
            "max_attempts": settings.JOBS_DEFAULT_MAX_ATTEMPTS,
            "run_at": timezone.now(),
            "content_type_id": content_type.pk if content_type else None,
            "requested_by_id": requester.pk if requester else None,
        },
    )
    transaction.on_commit(lambda: jobs_push_many_after_commit(job_ids=job_ids, queue=queue), robust=True)
    return job_ids


def jobs_push_many_after_commit(*, job_ids: Sequence[UUID], queue: str) -> bool:
    """Push committed pending Jobs of one queue in one Redis pipeline and mark them queued;
    leave them pending for the sweeper if Redis is down."""
    rq = rq_queue(queue)
    timeout = settings.RQ_QUEUES[queue].get("DEFAULT_TIMEOUT", settings.JOB_TIMEOUT_SECONDS)
    try:
        rq.enqueue_many(
            [
                rq.prepare_data(
                    RUNNER,
                    args=(str(job_id),),
                    job_id=str(job_id),
                    timeout=timeout,
                    result_ttl=24 * 3600,
                    failure_ttl=7 * 24 * 3600,
                )
                for job_id in job_ids
            ]
        )
    except (RedisError, OSError) as error:
        logger.warning("%d jobs not pushed: Redis unavailable (%s)", len(job_ids), error)
        return False
    Job.objects.filter(pk__in=job_ids, status=JobStatus.PENDING).update(
        status=JobStatus.QUEUED, queued_at=timezone.now()
    )
    return True


def job_push_after_commit(*, job_id: UUID, queue: str) -> bool:
    """Push a committed pending Job to RQ and mark it queued; leave it pending if Redis is down."""
    if not job_push_rollback_unsafe(job_id=job_id, queue=queue):
        return False
    Job.objects.filter(pk=job_id, status=JobStatus.PENDING).update(status=JobStatus.QUEUED, queued_at=timezone.now())
    return True


def job_push_rollback_unsafe(*, job_id: UUID, queue: str) -> bool:
    """Put the Job on its RQ queue. Not transactional: call only for rows already committed,
    or accept that the runner's claim turns a push of a rolled-back row into a no-op."""
    try:
        rq_queue(queue).enqueue_call(
            RUNNER,
            args=(str(job_id),),
            job_id=str(job_id),
            timeout=settings.RQ_QUEUES[queue].get("DEFAULT_TIMEOUT", settings.JOB_TIMEOUT_SECONDS),
            result_ttl=24 * 3600,
            failure_ttl=7 * 24 * 3600,
        )
    except (RedisError, OSError) as error:
        logger.warning("job %s not pushed: Redis unavailable (%s)", job_id, error)
        return False
    return True


_rq_queues: dict[tuple[str, str], Queue] = {}


def rq_queue(name: str) -> Queue:
    """The django-rq queue `name`, built once per configuration: django_rq.get_queue opens a
    new connection pool on every call, which costs a connection per push. Keyed by the
    queue's settings, so a changed RQ_QUEUES (tests) gets its own."""
    key = (name, json.dumps(settings.RQ_QUEUES[name], sort_keys=True, default=str))
    queue = _rq_queues.get(key)
    if queue is None:
        # "auto": enqueue when called. Our own outbox already waits for the commit; django-rq's
        # "on_db_commit" would defer a second time and return None inside a transaction.
        # A Redis that hangs instead of refusing must not hang the web request or the sweeper:
        # pushes give up after REDIS_PUSH_TIMEOUT_SECONDS and leave the job to the sweeper.
        connection = redis.Redis.from_url(
            settings.RQ_QUEUES[name]["URL"],
            socket_connect_timeout=settings.REDIS_PUSH_TIMEOUT_SECONDS,
            socket_timeout=settings.REDIS_PUSH_TIMEOUT_SECONDS,
        )
        queue = _rq_queues[key] = django_rq.get_queue(name, commit_mode="auto", connection=connection)
    return queue


def audit_record_many(*, actor: Actor, action: str, targets: Sequence[models.Model], reason: str = "") -> None:
    """audit_record for many objects of one model at once (one INSERT), in the caller's transaction."""
    if not targets:
        return
    insert_rows(
        AuditEntry,
        each={
            "object_id": [str(target.pk) for target in targets],
            "object_repr": [str(target)[:200] for target in targets],
        },
        same={
            "actor_id": user.pk if (user := actor_user(actor)) else None,
            "action": action,
            "reason": reason,
            "content_type_id": ContentType.objects.get_for_model(targets[0]).pk,
            "details": {},
        },
    )


def audit_record(
    *, actor: Actor, action: str, target: models.Model | None, reason: str = "", details: dict[str, Any] | None = None
) -> AuditEntry:
    """Append one audit entry in the caller's transaction."""
    return AuditEntry.objects.create(
        actor=actor_user(actor),
        action=action,
        reason=reason,
        content_type=ContentType.objects.get_for_model(target) if target is not None else None,
        object_id=str(target.pk) if target is not None else "",
        object_repr=str(target)[:200] if target is not None else "",
        details=details or {},
    )


def job_requeue(*, job: Job, actor: Actor, reason: str) -> Job:
    """Put a failed or canceled job back to pending with a fresh attempt budget; locks the row,
    audits, and pushes on commit."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        if not job.can_requeue():
            raise ValidationError(f"not failed or canceled (it is {job.get_status_display().lower()})")
        job.status = JobStatus.PENDING
        job.max_attempts = job.attempts + max(1, settings.JOBS_DEFAULT_MAX_ATTEMPTS)
        job.run_at = timezone.now()
        job.save(update_fields=["status", "max_attempts", "run_at"])
        audit_record(actor=actor, action="job_requeue", target=job, reason=reason)
        transaction.on_commit(lambda: job_push_after_commit(job_id=job.id, queue=job.queue), robust=True)
    return job


def job_cancel(*, job: Job, actor: Actor, reason: str) -> Job:
    """Cancel a job that has not started; a copy already in Redis finds it canceled and does nothing."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        if not job.can_cancel():
            raise ValidationError(f"already {job.get_status_display().lower()}")
        job.status = JobStatus.CANCELED
        job.finished_at = timezone.now()
        job.save(update_fields=["status", "finished_at"])
        audit_record(actor=actor, action="job_cancel", target=job, reason=reason)
    return job


# --- many jobs at once: the chunk handlers of the jobs list's bulk actions (backoffice.bulk) ---


def jobs_requeue_many(*, ids: Sequence[int | str], actor: Actor, reason: str) -> dict[str, ObjectOutcome]:
    """job_requeue for a chunk of jobs in one transaction: locks them, requeues the failed
    and canceled ones with one UPDATE, audits them, pushes them on commit. Returns
    {str(id): ObjectOutcome} (backoffice.bulk)."""
    outcomes: dict[str, ObjectOutcome] = {}
    with transaction.atomic():
        jobs = list(Job.objects.select_for_update().filter(pk__in=ids).order_by("pk"))
        chosen = []
        for job in jobs:
            if job.can_requeue():
                chosen.append(job)
                outcomes[str(job.pk)] = ObjectOutcome(label=str(job.pk))
            else:
                outcomes[str(job.pk)] = ObjectOutcome(
                    label=str(job.pk), skipped=f"not failed or canceled (it is {job.get_status_display().lower()})"
                )
        for job in chosen:
            job.status = JobStatus.PENDING
            job.max_attempts = job.attempts + max(1, settings.JOBS_DEFAULT_MAX_ATTEMPTS)
            job.run_at = timezone.now()
        Job.objects.bulk_update(chosen, ["status", "max_attempts", "run_at"])
        audit_record_many(actor=actor, action="job_requeue", targets=chosen, reason=reason)
        by_queue: dict[str, list[UUID]] = {}
        for job in chosen:
            by_queue.setdefault(job.queue, []).append(job.pk)
        for queue, job_ids in by_queue.items():
            transaction.on_commit(partial(jobs_push_many_after_commit, job_ids=job_ids, queue=queue), robust=True)
    return outcomes


def jobs_cancel_many(*, ids: Sequence[int | str], actor: Actor, reason: str) -> dict[str, ObjectOutcome]:
    """job_cancel for a chunk of jobs in one transaction (locks, one UPDATE, audits).
    Returns {id: ObjectOutcome} for each id (backoffice.bulk)."""
    outcomes: dict[str, ObjectOutcome] = {}
    with transaction.atomic():
        jobs = list(Job.objects.select_for_update().filter(pk__in=ids).order_by("pk"))
        chosen = []
        for job in jobs:
            if job.can_cancel():
                chosen.append(job)
                outcomes[str(job.pk)] = ObjectOutcome(label=str(job.pk))
            else:
                outcomes[str(job.pk)] = ObjectOutcome(
                    label=str(job.pk), skipped=f"already {job.get_status_display().lower()}"
                )
        Job.objects.filter(pk__in=[job.pk for job in chosen]).update(
            status=JobStatus.CANCELED, finished_at=timezone.now()
        )
        audit_record_many(actor=actor, action="job_cancel", targets=chosen, reason=reason)
    return outcomes
