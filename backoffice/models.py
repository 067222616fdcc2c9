import uuid

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models


class JobStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    RETRYING = "retrying", "Retrying"
    CANCELED = "canceled", "Canceled"


class Job(models.Model):
    """One unit of background work: the outbox row written in the caller's transaction and
    the ledger of its runs. Its id is also the RQ job id."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Written by the runner, kept for the record: a card number in them is masked (backoffice.card_numbers).
    card_numbers_masked = ("last_error", "traceback", "result", "progress_outcomes")

    func = models.CharField("function", max_length=200)
    kwargs = models.JSONField("arguments", default=dict, blank=True)
    queue = models.CharField(max_length=50, default="default")
    status = models.CharField(max_length=20, choices=JobStatus.choices, default=JobStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=5)
    run_at = models.DateTimeField("run at", db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    worker_name = models.CharField(max_length=200, blank=True)
    last_error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    result = models.JSONField(null=True, blank=True)
    content_type = models.ForeignKey(ContentType, null=True, blank=True, on_delete=models.PROTECT)
    object_id = models.CharField(max_length=64, blank=True, db_index=True)
    concerns = GenericForeignKey("content_type", "object_id")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Progress of a job that works through many objects (backoffice.progress): how many it
    # has handled whatever their outcome, out of how many, and what happened to them.
    progress_total = models.PositiveIntegerField(null=True, blank=True)
    progress_done = models.PositiveIntegerField(default=0)
    progress_outcomes = models.JSONField(default=dict, blank=True)
    progress_updated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The sweeper's: only rows it may still move. Succeeded, failed and canceled rows,
            # nearly all of the table, stay out of it.
            models.Index(
                fields=["status", "run_at"],
                condition=models.Q(status__in=["pending", "queued", "running", "retrying"]),
                name="job_status_run_at",
            ),
            # The jobs list: newest first, by function, and the statuses a person looks for.
            models.Index(fields=["created_at"], name="job_created_at"),
            models.Index(fields=["func", "created_at"], name="job_func_created"),
            models.Index(
                fields=["status", "created_at"], condition=~models.Q(status="succeeded"), name="job_status_created"
            ),
            models.Index(fields=["content_type", "object_id"], name="job_concerns"),
            # Job throughput per hour for the dashboard reads only the last hours' rows.
            models.Index(fields=["finished_at"], name="job_finished_at"),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=JobStatus.values), name="job_status_valid"),
            models.CheckConstraint(condition=models.Q(max_attempts__gte=1), name="job_max_attempts_positive"),
        ]
        permissions = [
            ("requeue_job", "Can requeue a failed or canceled job"),
            ("cancel_job", "Can cancel a job that has not run"),
        ]

    def __str__(self) -> str:
        return f"{self.short_func} {self.kwargs_summary} [{self.status}]"

    @property
    def short_func(self) -> str:
        return self.func.rsplit(".", 1)[-1]

    @property
    def kwargs_summary(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in self.kwargs.items())

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None

    @property
    def has_progress(self) -> bool:
        return self.progress_total is not None

    def can_requeue(self) -> bool:
        return self.status in (JobStatus.FAILED, JobStatus.CANCELED)

    def can_cancel(self) -> bool:
        return self.status in (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RETRYING)


class AuditEntry(models.Model):
    """Append-only record of a staff action that changed money or jobs: who, when, what, why."""

    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=50, db_index=True)
    reason = models.TextField(blank=True)
    content_type = models.ForeignKey(ContentType, null=True, on_delete=models.PROTECT)
    object_id = models.CharField(max_length=64, blank=True, db_index=True)
    target = GenericForeignKey("content_type", "object_id")
    object_repr = models.CharField(max_length=200, blank=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.action} {self.object_repr} by {self.actor}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("Audit entries are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("Audit entries are append-only.")


class Figure(models.Model):
    """One pre-aggregated number for the dashboard, the charts and the metrics: a series
    (`payments_captured_minor`), a time bucket (the start of a day or an hour) and a key (a
    currency, a decline code, a queue). Periodic jobs recompute recent buckets from the
    source tables, so a page view never scans them."""

    series = models.CharField(max_length=60)
    bucket = models.DateTimeField()
    key = models.CharField(max_length=60, blank=True)
    value = models.BigIntegerField(default=0)
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["series", "bucket", "key"], name="figure_once_per_bucket_and_key"),
        ]

    def __str__(self) -> str:
        return f"{self.series} {self.bucket:%Y-%m-%d %H:%M} {self.key}: {self.value}"


class PasswordResetRequest(models.Model):
    """One asked-for password reset, known address or not: what the limits count (per e-mail
    address and per client address, in the database) and what the sending job reads."""

    email = models.EmailField(db_index=True, help_text="As typed, lower-cased; it may belong to nobody.")
    client_address = models.CharField(max_length=45, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"password reset for {self.email} from {self.client_address}"
