import secrets
import string

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models.functions import Upper
from django_fsm import FSMField, FSMModelMixin, transition

from payments.money import format_minor, validate_currency
from payments.states import (
    CAPTURED,
    REFUND_TRANSITIONS,
    SETTLEMENT_TRANSITIONS,
    TRANSITIONS,
    AttemptOutcome,
    PaymentStatus,
    RefundStatus,
    SettlementStatus,
)

PUBLIC_ID_ALPHABET = string.ascii_letters + string.digits


def _random_id(prefix: str) -> str:
    # 24 characters of 62 is ~143 bits: not guessable, not enumerable.
    return prefix + "".join(secrets.choice(PUBLIC_ID_ALPHABET) for _ in range(24))


def new_public_id() -> str:
    return _random_id("pay_")


def new_refund_id() -> str:
    return _random_id("re_")


def new_request_key(origin: str) -> str:
    """A fresh request key for one rendered form (or one programmatic intent), e.g. `portal_...`:
    random, never derived from what a person typed."""
    return f"{origin}_" + secrets.token_urlsafe(24)


class Merchant(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=60, unique=True)
    contact_email = models.EmailField()
    is_active = models.BooleanField("active", default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


def _sources(name: str) -> list[str]:
    return list(TRANSITIONS[name][0])


def _target(name: str) -> str:
    return TRANSITIONS[name][1]


class Payment(FSMModelMixin, models.Model):
    # Indexed by payment_merchant_created (merchant first), which also serves the foreign key.
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="payments", db_index=False)
    public_id = models.CharField(max_length=40, unique=True, default=new_public_id, editable=False)
    amount_minor = models.BigIntegerField(help_text="Amount in the currency's minor unit (cents).")
    currency = models.CharField(max_length=3, validators=[RegexValidator(r"^[A-Z]{3}$"), validate_currency])
    status = FSMField(max_length=20, choices=PaymentStatus.choices, default=PaymentStatus.PENDING, protected=True)
    payment_method = models.CharField(
        max_length=64, help_text="A payment method token; card numbers are never accepted."
    )
    merchant_reference = models.CharField(max_length=100, blank=True)
    customer_email = models.EmailField(blank=True)
    description = models.CharField(max_length=255, blank=True)
    idempotency_key = models.CharField(max_length=100)
    needs_review = models.BooleanField(
        default=False, help_text="The gateway could not tell us what happened; a person must decide."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=PaymentStatus.values), name="payment_status_valid"),
            models.CheckConstraint(condition=models.Q(amount_minor__gt=0), name="payment_amount_positive"),
            models.CheckConstraint(condition=models.Q(currency__regex=r"^[A-Z]{3}$"), name="payment_currency_code"),
            models.UniqueConstraint(
                fields=["merchant", "idempotency_key"], name="payment_idempotency_key_per_merchant"
            ),
        ]
        indexes = [
            models.Index(fields=["status", "created_at"], name="payment_status_created"),
            # A merchant's payments, newest first (the portal's list, its deep pages, the dashboard).
            models.Index(fields=["merchant", "created_at"], name="payment_merchant_created"),
            # The portal dashboard's "failed in 7 days" and "unknown" counts of one merchant:
            # an index-only range over the few payments in those states.
            models.Index(
                fields=["merchant", "status", "created_at"],
                condition=models.Q(status__in=["failed", "unknown"]),
                name="payment_merchant_attention",
            ),
            # Search by the term's shape (payments.search): an idempotency key, a reference's
            # prefix (an id's prefix reads the varchar_pattern_ops index Django makes for the
            # unique public_id on PostgreSQL, payments_payment_public_id_0c37c47c_like).
            # The trigram indexes of contains-search (references, e-mails) are PostgreSQL's
            # own, made by migration 0010 (pg_trgm), not declared here.
            models.Index(fields=["idempotency_key"], name="payment_idempotency_key"),
            models.Index(
                fields=["merchant_reference"], opclasses=["varchar_pattern_ops"], name="payment_reference_prefix"
            ),
            models.Index(Upper("customer_email"), name="payment_email_upper"),  # a whole address, any case
        ]
        permissions = [
            ("process_payment", "Can send a pending payment to the gateway now"),
            ("retry_payment", "Can retry a failed payment"),
            ("cancel_payment", "Can cancel a pending payment"),
            ("request_refund", "Can request a refund"),
            ("approve_refund", "Can approve or reject a refund requested by someone else"),
            ("request_settlement", "Can ask to settle an unknown payment by hand"),
            ("approve_settlement", "Can approve or reject a manual settlement asked by someone else"),
        ]

    def __str__(self) -> str:
        return self.public_id

    @property
    def amount_display(self) -> str:
        return format_minor(self.amount_minor, self.currency)

    def is_captured(self) -> bool:
        return self.status in CAPTURED

    # Transitions: the table in states.py is the single source; services are the only callers.
    @transition(field=status, source=_sources("start_processing"), target=_target("start_processing"))
    def start_processing(self):
        pass

    @transition(field=status, source=_sources("succeed"), target=_target("succeed"))
    def succeed(self):
        self.needs_review = False

    @transition(field=status, source=_sources("fail"), target=_target("fail"))
    def fail(self):
        self.needs_review = False

    @transition(field=status, source=_sources("mark_unknown"), target=_target("mark_unknown"))
    def mark_unknown(self):
        pass

    @transition(field=status, source=_sources("retry"), target=_target("retry"))
    def retry(self):
        pass

    @transition(field=status, source=_sources("cancel"), target=_target("cancel"))
    def cancel(self):
        pass

    @transition(field=status, source=_sources("refund_partially"), target=_target("refund_partially"))
    def refund_partially(self):
        pass

    @transition(field=status, source=_sources("refund_fully"), target=_target("refund_fully"))
    def refund_fully(self):
        pass


class PaymentAttempt(models.Model):
    """One call to the gateway, with its own idempotency key so a repeat never charges twice."""

    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="attempts")
    number = models.PositiveIntegerField()
    # The processor's reference is its identifier, stored as given; its message is masked.
    card_numbers_exempt = ("gateway_reference",)
    card_numbers_masked = ("error_message",)

    idempotency_key = models.CharField(max_length=100, unique=True)
    outcome = models.CharField(max_length=20, choices=AttemptOutcome.choices, default=AttemptOutcome.PENDING)
    gateway_reference = models.CharField(max_length=100, blank=True)
    error_code = models.CharField(max_length=50, blank=True)
    error_message = models.CharField(max_length=255, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    lookups = models.PositiveIntegerField(default=0, help_text="Times the gateway was asked what happened.")
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["payment", "number"]
        constraints = [
            models.UniqueConstraint(fields=["payment", "number"], name="attempt_number_per_payment"),
            models.CheckConstraint(condition=models.Q(outcome__in=AttemptOutcome.values), name="attempt_outcome_valid"),
        ]
        # Equality, and the prefix search of payments.search (LIKE 'ch_…%' in any collation).
        indexes = [
            models.Index(fields=["gateway_reference"], opclasses=["varchar_pattern_ops"], name="attempt_gateway_ref")
        ]

    def __str__(self) -> str:
        return f"{self.payment.public_id} attempt {self.number}"


class StatusEvent(models.Model):
    from_status = models.CharField(max_length=20, blank=True)
    to_status = models.CharField(max_length=20)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_label = models.CharField(max_length=100, blank=True, help_text="Who, when not a user: worker, system.")
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        abstract = True
        ordering = ["created_at", "id"]

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("Events are append-only.")
        super().save(*args, **kwargs)


class PaymentEvent(StatusEvent):
    """Append-only history of a payment's status."""

    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="events")

    class Meta(StatusEvent.Meta):
        pass

    def __str__(self) -> str:
        return f"{self.payment.public_id}: {self.from_status or '-'} -> {self.to_status}"


def _refund_sources(name: str) -> list[str]:
    return list(REFUND_TRANSITIONS[name][0])


def _refund_target(name: str) -> str:
    return REFUND_TRANSITIONS[name][1]


class Refund(FSMModelMixin, models.Model):
    """Money going back to the customer: requested, approved by a second person when large,
    sent to the gateway under its own idempotency key."""

    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="refunds")
    # The processor's reference is its identifier, stored as given; its message is masked.
    card_numbers_exempt = ("gateway_reference",)
    card_numbers_masked = ("error_message",)

    public_id = models.CharField(max_length=40, unique=True, default=new_refund_id, editable=False)
    amount_minor = models.BigIntegerField()
    reason = models.TextField()
    status = FSMField(max_length=20, choices=RefundStatus.choices, default=RefundStatus.REQUESTED, protected=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    rejected_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    needs_approval = models.BooleanField(default=False)
    request_key = models.CharField(
        max_length=100,
        editable=False,
        help_text="The key of the request that asked for it: the same form posted again finds this refund.",
    )
    decision_note = models.TextField(blank=True)
    gateway_reference = models.CharField(max_length=100, blank=True)
    error_code = models.CharField(max_length=50, blank=True)
    error_message = models.CharField(max_length=255, blank=True)
    unclear_answers = models.PositiveIntegerField(
        default=0, help_text="Sends under the refund's key that got no clear answer from the gateway."
    )
    lookups = models.PositiveIntegerField(default=0, help_text="Times the gateway was asked what happened.")
    needs_review = models.BooleanField(
        default=False, help_text="The gateway could not tell us what happened; a person must decide."
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=RefundStatus.values), name="refund_status_valid"),
            models.CheckConstraint(condition=models.Q(amount_minor__gt=0), name="refund_amount_positive"),
            # Four eyes, in the database too: nobody approves or rejects their own refund.
            models.CheckConstraint(
                condition=models.Q(approved_by__isnull=True) | ~models.Q(approved_by=models.F("requested_by")),
                name="refund_approver_not_requester",
            ),
            models.CheckConstraint(
                condition=models.Q(rejected_by__isnull=True) | ~models.Q(rejected_by=models.F("requested_by")),
                name="refund_rejecter_not_requester",
            ),
            # A money-moving command runs once per request, in the database: a form posted
            # twice (double click, two tabs, a retried request) finds the first refund.
            models.UniqueConstraint(fields=["payment", "request_key"], name="refund_request_key_per_payment"),
        ]
        # "Awaiting approval" and the status filters of the refunds list and the portal.
        indexes = [models.Index(fields=["status", "created_at"], name="refund_status_created")]

    def __str__(self) -> str:
        return self.public_id

    @property
    def amount_display(self) -> str:
        return format_minor(self.amount_minor, self.payment.currency)

    @property
    def idempotency_key(self) -> str:
        return self.public_id

    @transition(field=status, source=_refund_sources("approve"), target=_refund_target("approve"))
    def approve(self):
        pass

    @transition(field=status, source=_refund_sources("reject"), target=_refund_target("reject"))
    def reject(self):
        pass

    @transition(field=status, source=_refund_sources("start_processing"), target=_refund_target("start_processing"))
    def start_processing(self):
        pass

    @transition(field=status, source=_refund_sources("succeed"), target=_refund_target("succeed"))
    def succeed(self):
        self.needs_review = False

    @transition(field=status, source=_refund_sources("fail"), target=_refund_target("fail"))
    def fail(self):
        self.needs_review = False

    @transition(field=status, source=_refund_sources("mark_unknown"), target=_refund_target("mark_unknown"))
    def mark_unknown(self):
        pass


class RefundEvent(StatusEvent):
    """Append-only history of a refund's status."""

    refund = models.ForeignKey(Refund, on_delete=models.PROTECT, related_name="events")

    class Meta(StatusEvent.Meta):
        pass

    def __str__(self) -> str:
        return f"{self.refund.public_id}: {self.from_status or '-'} -> {self.to_status}"


class SettlementRequest(FSMModelMixin, models.Model):
    """A request to settle an unknown payment, or an unknown refund of it, by hand; applied only
    when a second person approves."""

    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="settlement_requests")
    refund = models.ForeignKey(
        Refund,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="settlement_requests",
        help_text="Set when the refund, not the payment, is settled.",
    )
    settle_as = models.CharField(
        max_length=20,
        choices=[(PaymentStatus.SUCCEEDED, "Succeeded"), (PaymentStatus.FAILED, "Failed")],
    )
    reason = models.TextField()
    gateway_reference = models.CharField(
        max_length=100, blank=True, help_text="The processor's reference of the charge, when settling as succeeded."
    )
    status = FSMField(
        max_length=20, choices=SettlementStatus.choices, default=SettlementStatus.REQUESTED, protected=True
    )
    request_key = models.CharField(
        max_length=100,
        editable=False,
        help_text="The key of the request that asked for it: the same form posted again finds this request.",
    )
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decision_note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "manual settlement request"
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=SettlementStatus.values), name="settlement_status_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(settle_as__in=[PaymentStatus.SUCCEEDED, PaymentStatus.FAILED]),
                name="settlement_target_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(decided_by__isnull=True) | ~models.Q(decided_by=models.F("requested_by")),
                name="settlement_decider_not_requester",
            ),
            models.UniqueConstraint(
                fields=["payment"],
                condition=models.Q(status="requested", refund__isnull=True),
                name="one_open_settlement_per_payment",
            ),
            models.UniqueConstraint(
                fields=["refund"],
                condition=models.Q(status="requested", refund__isnull=False),
                name="one_open_settlement_per_refund",
            ),
            models.UniqueConstraint(fields=["payment", "request_key"], name="settlement_request_key_per_payment"),
        ]

    def __str__(self) -> str:
        subject = self.refund.public_id if self.refund is not None else self.payment.public_id
        return f"{subject} -> {self.settle_as} ({self.status})"

    # Decided through payments.services.settlements only, like every status here.
    @transition(
        field=status, source=list(SETTLEMENT_TRANSITIONS["approve"][0]), target=SETTLEMENT_TRANSITIONS["approve"][1]
    )
    def approve(self):
        pass

    @transition(
        field=status, source=list(SETTLEMENT_TRANSITIONS["reject"][0]), target=SETTLEMENT_TRANSITIONS["reject"][1]
    )
    def reject(self):
        pass


class SimulatedGatewayRecord(models.Model):
    """The simulated gateway's own ledger, keyed by idempotency key. A real processor keeps
    this on its side; ours lives in the database so every worker process shares it."""

    card_numbers_exempt = ("reference",)  # the processor's own identifier (random hex)

    idempotency_key = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=10, default="charge")
    token = models.CharField(max_length=64)
    amount_minor = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    approved = models.BooleanField()
    reference = models.CharField(max_length=100, unique=True)
    decline_code = models.CharField(max_length=50, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "simulated gateway record"

    def __str__(self) -> str:
        return f"{self.kind} {self.idempotency_key}"


class Membership(models.Model):
    """A user's access to one merchant in the merchant portal. Staff accounts have none
    unless given one: being staff grants nothing in the portal."""

    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        MEMBER = "member", "Member"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="merchant_memberships")
    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["merchant__name", "user__username"]
        constraints = [
            models.UniqueConstraint(fields=["user", "merchant"], name="membership_one_per_user_and_merchant"),
            models.CheckConstraint(condition=models.Q(role__in=["owner", "member"]), name="membership_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.get_role_display().lower()} of {self.merchant})"

    @property
    def is_owner(self) -> bool:
        return self.role == self.Role.OWNER


def new_export_id() -> str:
    return _random_id("exp_")


class Export(models.Model):
    """A large export written by a background job into a file under EXPORT_DIR: who asked,
    what (payments or refunds, CSV or XLSX, the list's filters), for which merchant when it
    was asked in the portal, and until when the file is kept. Only the requester (or a
    superuser) downloads a staff export; only the merchant's members download theirs."""

    class Kind(models.TextChoices):
        PAYMENTS = "payments"
        REFUNDS = "refunds"

    class Format(models.TextChoices):
        CSV = "csv"
        XLSX = "xlsx"

    # A list searched for a card number finds nothing (none is stored): the saved filters keep
    # it masked, which finds the same nothing, instead of refusing the export.
    card_numbers_masked = ("query",)

    public_id = models.CharField(max_length=40, unique=True, default=new_export_id, editable=False)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    file_format = models.CharField("format", max_length=4, choices=Format.choices)
    query = models.JSONField("filters", default=dict, blank=True, help_text="The list's query string, as lists.")
    merchant = models.ForeignKey(
        Merchant, null=True, blank=True, on_delete=models.CASCADE, related_name="+", help_text="Portal exports only."
    )
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    rows = models.PositiveBigIntegerField(null=True, blank=True)
    size_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    file_name = models.CharField(max_length=100, blank=True, help_text="Under EXPORT_DIR; empty until written.")
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        indexes = [models.Index(fields=["merchant", "-created_at"], name="export_merchant_recent")]

    def __str__(self) -> str:
        return f"{self.kind} {self.file_format} {self.public_id}"

    @property
    def download_name(self) -> str:
        return f"{self.kind}-{self.created_at:%Y%m%d-%H%M%S}.{self.file_format}"

    @property
    def is_ready(self) -> bool:
        return bool(self.file_name)
