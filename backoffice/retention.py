"""Bounded growth: rows past their horizon are deleted in small batches, each its own short
transaction, so no pass holds a lock for long or blocks the workers.

Each app registers the policies of its tables in `AppConfig.ready()` (backoffice knows no
other app):

    register_retention(RetentionPolicy(name="notifications.delivered", horizon_setting=...,
                                       candidates=delivered_before, delete=notifications_delete))

`candidates(cutoff)` returns a queryset of primary keys, oldest first, of rows that may go;
`delete(pks)` deletes those rows (and the rows that hang on them) and returns how many.
Never registered: payments, their attempts and events, refunds, audit entries, the ledger.

The sweeper process runs a pass every RETENTION_INTERVAL_SECONDS, for at most
RETENTION_PASS_SECONDS (the rest waits for the next pass); `manage.py prune_retention` runs
until nothing is left, for operators and a first clean-up.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.sessions.models import Session
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from backoffice.models import Job, JobStatus

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionPolicy:
    name: str
    what: str  # for people: "succeeded jobs finished more than 30 days ago"
    horizon_setting: str | None  # days, a setting validated at start-up; None: due at once
    candidates: Callable[..., QuerySet]  # (cutoff) -> pks of rows that may go, oldest first
    delete: Callable[[list], int]

    @property
    def horizon(self) -> timedelta:
        return timedelta(days=getattr(settings, self.horizon_setting)) if self.horizon_setting else timedelta(0)


_policies: dict[str, RetentionPolicy] = {}


def register_retention(policy: RetentionPolicy) -> None:
    _policies[policy.name] = policy


def retention_policies() -> list[RetentionPolicy]:
    return sorted(_policies.values(), key=lambda policy: policy.name)


def retention_apply(
    *, budget_seconds: float | None = None, batch_size: int | None = None, dry_run: bool = False
) -> dict[str, int]:
    """Delete, policy by policy and batch by batch, what is past its horizon. Stops when the
    budget is spent (None: when nothing is left). Returns rows deleted (or due) per policy."""
    batch_size = batch_size or settings.RETENTION_BATCH_SIZE
    deadline = None if budget_seconds is None else time.monotonic() + budget_seconds
    done: dict[str, int] = {}
    for policy in retention_policies():
        cutoff = timezone.now() - policy.horizon
        done[policy.name] = 0
        if dry_run:
            done[policy.name] = policy.candidates(cutoff).count()
            continue
        while deadline is None or time.monotonic() < deadline:
            deleted = _delete_batch(policy, cutoff, batch_size)
            done[policy.name] += deleted
            if deleted < batch_size:
                break
    return done


def _delete_batch(policy: RetentionPolicy, cutoff, batch_size: int) -> int:
    # SKIP LOCKED: a row a worker or a second pruner holds is left for the next batch.
    with transaction.atomic():
        pks = list(policy.candidates(cutoff).select_for_update(skip_locked=True)[:batch_size])
        return policy.delete(pks) if pks else 0


def retention_pass() -> None:
    """The sweeper process's periodic pass (backoffice.periodic)."""
    done = retention_apply(budget_seconds=settings.RETENTION_PASS_SECONDS)
    if any(done.values()):
        logger.info("retention: deleted %s", ", ".join(f"{count} {name}" for name, count in done.items() if count))


# --- backoffice's own tables --------------------------------------------------------------------


def succeeded_jobs_before(cutoff) -> QuerySet:
    # Oldest first along job_finished_at; failed and canceled jobs stay for people to see.
    return (
        Job.objects.filter(status=JobStatus.SUCCEEDED, finished_at__lt=cutoff)
        .order_by("finished_at")
        .values_list("pk", flat=True)
    )


def jobs_delete(pks: list) -> int:
    return Job.objects.filter(pk__in=pks).delete()[0]


def expired_sessions_before(cutoff) -> QuerySet:
    # What `clearsessions` deletes (a session's horizon is its own expiry), in batches.
    return Session.objects.filter(expire_date__lt=cutoff).order_by("expire_date").values_list("pk", flat=True)


def sessions_delete(pks: list) -> int:
    return Session.objects.filter(pk__in=pks).delete()[0]


def register() -> None:
    register_retention(
        RetentionPolicy(
            name="backoffice.succeeded_jobs",
            what="succeeded jobs, RETENTION_SUCCEEDED_JOBS_DAYS after they finished",
            horizon_setting="RETENTION_SUCCEEDED_JOBS_DAYS",
            candidates=succeeded_jobs_before,
            delete=jobs_delete,
        )
    )
    if settings.SESSION_ENGINE in ("django.contrib.sessions.backends.db", "django.contrib.sessions.backends.cached_db"):
        register_retention(
            RetentionPolicy(
                name="sessions.expired",
                what="sessions past their expiry (what clearsessions deletes)",
                horizon_setting=None,
                candidates=expired_sessions_before,
                delete=sessions_delete,
            )
        )
