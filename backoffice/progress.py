"""Progress of a job that works through many objects, written to its Job row in chunks so the
job's admin page shows done / total, the rate, the time left and what happened to each object.

A job body reads:

    def export_payments(*, payment_ids: list[int]) -> dict:
        progress = job_progress(total=len(payment_ids))
        for start in range(progress.done, len(payment_ids), 500):   # resumes after a retry
            chunk = payment_ids[start : start + 500]
            with transaction.atomic():
                ...                                                  # the chunk's bulk writes
                progress.record(done=[...labels...], skipped=[(label, "why"), ...])
        return progress.summary()

`record` is one UPDATE of the job's row. Called inside the chunk's transaction, the progress
commits with the chunk's writes, so a retried job resumes exactly after the last committed
chunk (`progress.done`). Called outside a job (a test calling the body directly, a shell),
the reporter only counts in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from backoffice.models import Job

_running_job_id: ContextVar = ContextVar("running_job_id", default=None)


@contextmanager
def running_job(job_id) -> Iterator[None]:
    """The runner marks the job whose body runs, so `job_progress` knows which row to write."""
    token = _running_job_id.set(job_id)
    try:
        yield
    finally:
        _running_job_id.reset(token)


def running_job_id():
    return _running_job_id.get()


@dataclass(frozen=True)
class ObjectOutcome:
    """What a job did to one object: `label` names it on the job's page; `skipped` says why
    it was left alone (empty when it was done)."""

    label: str
    skipped: str = ""


def empty_outcomes() -> dict:
    return {"done": 0, "skipped": {}, "objects": []}


class JobProgress:
    """Counts of one job's objects: `done` is how many it handled whatever their outcome;
    `outcomes` holds the split ({"done": n, "skipped": {reason: n}}) and the objects listed
    one by one ({"object", "outcome", "reason"}; skipped ones up to
    JOBS_PROGRESS_LISTED_SKIPPED, done ones up to JOBS_PROGRESS_LISTED_DONE: counts cover all)."""

    def __init__(self, *, job_id, total: int):
        self.job_id = job_id
        self.total = total
        self.done = 0
        self.outcomes = empty_outcomes()
        if job_id is None:
            return
        previous = Job.objects.filter(pk=job_id).values("progress_total", "progress_done", "progress_outcomes").first()
        if previous and previous["progress_total"] == total and previous["progress_outcomes"]:
            # A retry of this job: carry on after what the previous attempt committed.
            self.done = previous["progress_done"]
            self.outcomes = {**empty_outcomes(), **previous["progress_outcomes"]}
        else:
            self._write()

    def record(self, *, done: Iterable[str] = (), skipped: Iterable[tuple[str, str]] = ()) -> None:
        """Count a chunk's objects: `done` are labels of the objects changed, `skipped` are
        (label, reason) of those left alone; then write the counts to the job's row."""
        listed = self.outcomes["objects"]
        listed_done = sum(1 for item in listed if item["outcome"] == "done")
        listed_skipped = len(listed) - listed_done
        for label in done:
            self.done += 1
            self.outcomes["done"] += 1
            if listed_done < settings.JOBS_PROGRESS_LISTED_DONE:
                listed.append({"object": str(label), "outcome": "done", "reason": ""})
                listed_done += 1
        for label, reason in skipped:
            self.done += 1
            self.outcomes["skipped"][reason] = self.outcomes["skipped"].get(reason, 0) + 1
            if listed_skipped < settings.JOBS_PROGRESS_LISTED_SKIPPED:
                listed.append({"object": str(label), "outcome": "skipped", "reason": reason})
                listed_skipped += 1
        self._write()

    def record_outcomes(self, outcomes: Iterable[ObjectOutcome]) -> None:
        """`record` for ObjectOutcome values (what bulk-action handlers return)."""
        outcomes = list(outcomes)
        self.record(
            done=[item.label for item in outcomes if not item.skipped],
            skipped=[(item.label, item.skipped) for item in outcomes if item.skipped],
        )

    def advance(self, count: int) -> None:
        """Count `count` more objects done without listing them (an export's rows)."""
        self.done += count
        self.outcomes["done"] += count
        self._write()

    def restart(self) -> None:
        """Count from zero again, for a job that redoes its work from the start when retried
        (an export rewrites its file)."""
        self.done = 0
        self.outcomes = empty_outcomes()
        self._write()

    def summary(self) -> dict:
        """A small result for the job's row: how many done, how many skipped and why."""
        return {"total": self.total, "done": self.outcomes["done"], "skipped": dict(self.outcomes["skipped"])}

    def _write(self) -> None:
        if self.job_id is None:
            return
        Job.objects.filter(pk=self.job_id).update(
            progress_total=self.total,
            progress_done=self.done,
            progress_outcomes=self.outcomes,
            progress_updated_at=timezone.now(),
        )


def job_progress(*, total: int) -> JobProgress:
    """The progress reporter of the job running in this process (a counter in memory when
    no job is running)."""
    return JobProgress(job_id=running_job_id(), total=total)


def progress_rate(job: Job) -> tuple[float | None, float | None]:
    """(objects per second, seconds left) of a job with progress, from its start to its last
    report; None where it cannot be told yet."""
    if not job.has_progress or not job.started_at or not job.progress_updated_at or not job.progress_done:
        return None, None
    elapsed = (job.progress_updated_at - job.started_at).total_seconds()
    if elapsed <= 0:
        return None, None
    rate = job.progress_done / elapsed
    left = max(0, (job.progress_total or 0) - job.progress_done)
    return rate, left / rate if rate else None
