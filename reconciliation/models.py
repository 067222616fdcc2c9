from django.conf import settings
from django.db import models

from ledger.models import Transaction
from payments.models import Merchant, PaymentAttempt, Refund, SettlementRequest
from payments.money import format_minor
from reconciliation.formats import LINE_TYPES


class SettlementFile(models.Model):
    """One report file as received. Its hash makes a second copy of the same file a no-op."""

    class Source(models.TextChoices):
        UPLOAD = "upload", "Uploaded in the admin"
        FETCH = "fetch", "Fetched from the processor"

    processor = models.CharField(max_length=30)
    day = models.DateField(help_text="The processor day the report covers (UTC).")
    sha256 = models.CharField(max_length=64)
    source = models.CharField(max_length=10, choices=Source.choices)
    filename = models.CharField(max_length=255, blank=True)
    size_bytes = models.BigIntegerField()
    line_count = models.PositiveIntegerField(help_text="Lines in the file, header excluded.")
    new_line_count = models.PositiveIntegerField(help_text="Lines no earlier file of this processor had.")
    ingested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    ingested_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-day", "-ingested_at"]
        constraints = [
            models.UniqueConstraint(fields=["processor", "sha256"], name="settlement_file_once_per_processor"),
        ]

    def __str__(self) -> str:
        return f"{self.processor} {self.day} ({self.line_count} lines)"


class LineOutcome(models.TextChoices):
    UNMATCHED = "", "Not matched yet"
    MATCHED = "matched", "Matched"
    AMOUNT_MISMATCH = "amount_mismatch", "Amount or currency mismatch"
    STATUS_MISMATCH = "status_mismatch", "Status mismatch"
    FEE_MISMATCH = "fee_mismatch", "Fee mismatch"
    MISSING_OURS = "missing_ours", "Missing on our side"
    DUPLICATE = "duplicate", "Duplicate"


class DiscrepancyKind(models.TextChoices):
    AMOUNT_MISMATCH = "amount_mismatch", "Amount or currency mismatch"
    STATUS_MISMATCH = "status_mismatch", "Status mismatch"
    FEE_MISMATCH = "fee_mismatch", "Fee mismatch"
    MISSING_OURS = "missing_ours", "Missing on our side"
    MISSING_THEIRS = "missing_theirs", "Missing in their report"
    DUPLICATE = "duplicate", "Duplicate"


class SettlementLine(models.Model):
    """One line of a processor's report, in our field names, with what matching made of it."""

    # Matching rewrites the outcome columns of every line: none of them is indexed (and the table
    # leaves room on its pages, see the migration), so PostgreSQL updates them in place (HOT)
    # instead of writing into every index. Files, attempts and refunds are never deleted, so
    # their foreign keys need no index here either.
    file = models.ForeignKey(SettlementFile, on_delete=models.PROTECT, related_name="lines", db_index=False)
    # The processor's identifiers, stored as its report gives them; the matching note is masked.
    card_numbers_exempt = ("line_id", "processor_reference", "idempotency_key", "charge_reference")
    card_numbers_masked = ("note",)

    processor = models.CharField(max_length=30)
    line_id = models.CharField(max_length=100)
    # The n-th line with this line_id in one file: a report repeating a line is a duplicate to
    # flag, not a line to drop.
    occurrence = models.PositiveSmallIntegerField(default=1)
    line_number = models.PositiveIntegerField(help_text="Line number in the file it first came in (header = 1).")
    line_type = models.CharField(max_length=10, choices=[(t, t) for t in LINE_TYPES])
    processor_reference = models.CharField(max_length=100)
    idempotency_key = models.CharField(max_length=100, blank=True)
    charge_reference = models.CharField(max_length=100, blank=True)
    amount_minor = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    occurred_at = models.DateTimeField()
    day = models.DateField()
    outcome = models.CharField(max_length=20, choices=LineOutcome.choices, blank=True, default="")
    payment_attempt = models.ForeignKey(
        PaymentAttempt,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="settlement_lines",
        db_index=False,
    )
    refund = models.ForeignKey(
        Refund, null=True, blank=True, on_delete=models.PROTECT, related_name="settlement_lines", db_index=False
    )
    linked_by_hand = models.BooleanField(
        default=False, help_text="A person linked this line to its record; matching keeps that link."
    )
    expected_amount_minor = models.BigIntegerField(null=True, blank=True, help_text="What our records say.")
    note = models.CharField(max_length=255, blank=True, help_text="What matching compared.")
    matched_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["processor", "line_id", "occurrence"], name="settlement_line_once_per_processor"
            ),
            models.CheckConstraint(condition=models.Q(amount_minor__gt=0), name="settlement_line_amount_positive"),
            models.CheckConstraint(condition=models.Q(line_type__in=LINE_TYPES), name="settlement_line_type_valid"),
            models.CheckConstraint(
                condition=models.Q(outcome__in=LineOutcome.values), name="settlement_line_outcome_valid"
            ),
        ]
        indexes = [
            models.Index(fields=["processor", "day", "id"], name="settlement_line_day"),
            models.Index(fields=["processor", "line_type", "processor_reference"], name="settlement_line_reference"),
            models.Index(fields=["processor", "line_type", "idempotency_key"], name="settlement_line_key"),
            models.Index(fields=["processor", "line_type", "charge_reference"], name="settlement_line_charge"),
            models.Index(fields=["id"], condition=models.Q(linked_by_hand=True), name="settlement_line_linked"),
        ]

    def __str__(self) -> str:
        return f"{self.line_id} ({self.line_type})"

    @property
    def amount_display(self) -> str:
        return format_minor(self.amount_minor, self.currency)


class DiscrepancyStatus(models.TextChoices):
    OPEN = "open", "Open"
    RESOLVED = "resolved", "Resolved by a person"
    CLEARED = "cleared", "Cleared on a re-run"


class Resolution(models.TextChoices):
    LINKED = "linked", "Linked to the right record"
    ADJUSTED = "adjusted", "Adjusted in the ledger"
    ACCEPTED = "accepted", "Accepted with a reason"


class Discrepancy(models.Model):
    """An entry of the exceptions queue: a report line, or one of our records, that did not
    match. Matching opens and clears them; only a person resolves one, and a re-run never
    touches a resolved one."""

    card_numbers_masked = ("detail",)  # written by matching, from the processor's references

    kind = models.CharField(max_length=20, choices=DiscrepancyKind.choices)
    status = models.CharField(max_length=10, choices=DiscrepancyStatus.choices, default=DiscrepancyStatus.OPEN)
    processor = models.CharField(max_length=30)
    day = models.DateField()
    line = models.ForeignKey(
        SettlementLine, null=True, blank=True, on_delete=models.PROTECT, related_name="discrepancies"
    )
    payment_attempt = models.ForeignKey(
        PaymentAttempt, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    refund = models.ForeignKey(Refund, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    merchant = models.ForeignKey(Merchant, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    amount_minor = models.BigIntegerField(help_text="Their amount, or ours when their report lacks the record.")
    currency = models.CharField(max_length=3)
    expected_amount_minor = models.BigIntegerField(null=True, blank=True)
    detail = models.CharField(max_length=255, blank=True)
    resolution = models.CharField(max_length=10, choices=Resolution.choices, blank=True)
    resolution_reason = models.TextField(blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    settlement_request = models.ForeignKey(
        SettlementRequest, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "exception"
        verbose_name_plural = "exceptions queue"
        ordering = ["-day", "id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(kind__in=DiscrepancyKind.values), name="discrepancy_kind_valid"),
            models.CheckConstraint(
                condition=models.Q(status__in=DiscrepancyStatus.values), name="discrepancy_status_valid"
            ),
            # One entry per report line, and one "missing in their report" per record of ours:
            # re-running a day finds the entry it opened before instead of opening another.
            models.UniqueConstraint(
                fields=["line"], condition=models.Q(line__isnull=False), name="discrepancy_per_line"
            ),
            models.UniqueConstraint(
                fields=["payment_attempt"],
                condition=models.Q(kind="missing_theirs", payment_attempt__isnull=False),
                name="discrepancy_missing_attempt",
            ),
            models.UniqueConstraint(
                fields=["refund"],
                condition=models.Q(kind="missing_theirs", refund__isnull=False),
                name="discrepancy_missing_refund",
            ),
            models.CheckConstraint(
                condition=models.Q(status="resolved", resolved_by__isnull=False, resolution__gt="")
                | ~models.Q(status="resolved"),
                name="discrepancy_resolved_by_someone",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "kind", "day"], name="discrepancy_queue"),
            models.Index(fields=["processor", "day"], name="discrepancy_day"),
        ]
        permissions = [
            ("resolve_discrepancy", "Can resolve reconciliation exceptions"),
            ("approve_adjustment", "Can approve a ledger adjustment asked by someone else"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.day} #{self.pk}"

    @property
    def amount_display(self) -> str:
        return format_minor(self.amount_minor, self.currency)


class MatchingRun(models.Model):
    """One matching pass over a processor day: what it found, for the day's report."""

    processor = models.CharField(max_length=30)
    day = models.DateField()
    job = models.ForeignKey("backoffice.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    summary = models.JSONField(default=dict, blank=True, help_text="Lines evaluated and what each became.")
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["processor", "day"], name="matching_run_day")]

    def __str__(self) -> str:
        return f"matching {self.processor} {self.day}"


class AdjustmentStatus(models.TextChoices):
    REQUESTED = "requested", "Awaiting approval"
    POSTED = "posted", "Posted to the ledger"
    REJECTED = "rejected", "Rejected"


class AdjustmentDirection(models.TextChoices):
    CREDIT = "credit", "Credit (the account gets more)"
    DEBIT = "debit", "Debit (the account gets less)"


class AdjustmentRequest(models.Model):
    """Resolving an exception by a ledger adjustment. Below the approval threshold it is posted
    when asked; at or above it waits for a second person. The request key (from the form) is
    unique, so a double submit makes one request and one posting."""

    discrepancy = models.ForeignKey(Discrepancy, on_delete=models.PROTECT, related_name="adjustments")
    request_key = models.CharField(max_length=100, unique=True)
    merchant = models.ForeignKey(Merchant, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    currency = models.CharField(max_length=3)
    amount_minor = models.BigIntegerField(help_text="Always positive; the direction says which way.")
    direction = models.CharField(max_length=10, choices=AdjustmentDirection.choices)
    reason = models.TextField()
    status = models.CharField(max_length=10, choices=AdjustmentStatus.choices, default=AdjustmentStatus.REQUESTED)
    needs_approval = models.BooleanField(default=False)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decision_note = models.TextField(blank=True)
    ledger_transaction = models.OneToOneField(
        Transaction, null=True, blank=True, on_delete=models.PROTECT, related_name="reconciliation_adjustment"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "ledger adjustment of an exception"
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(amount_minor__gt=0), name="adjustment_amount_positive"),
            models.CheckConstraint(
                condition=models.Q(status__in=AdjustmentStatus.values), name="adjustment_status_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(direction__in=AdjustmentDirection.values), name="adjustment_direction_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(decided_by__isnull=True) | ~models.Q(decided_by=models.F("requested_by")),
                name="adjustment_decider_not_requester",
            ),
            models.CheckConstraint(
                condition=~models.Q(status="posted") | models.Q(ledger_transaction__isnull=False),
                name="adjustment_posted_has_transaction",
            ),
            # At most one adjustment of an exception awaiting approval or posted.
            models.UniqueConstraint(
                fields=["discrepancy"],
                condition=models.Q(status__in=["requested", "posted"]),
                name="one_adjustment_per_discrepancy",
            ),
        ]

    def __str__(self) -> str:
        return f"adjustment #{self.pk} of {self.discrepancy_id} ({self.status})"

    @property
    def signed_amount_minor(self) -> int:
        return self.amount_minor if self.direction == AdjustmentDirection.CREDIT else -self.amount_minor

    @property
    def amount_display(self) -> str:
        sign = "" if self.direction == AdjustmentDirection.CREDIT else "-"
        return sign + format_minor(self.amount_minor, self.currency)
