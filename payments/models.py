import secrets
import string

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django_fsm import FSMField, FSMModelMixin, transition

from payments.money import format_minor, validate_currency
from payments.states import CAPTURED, TRANSITIONS, AttemptOutcome, PaymentStatus

PUBLIC_ID_ALPHABET = string.ascii_letters + string.digits


def new_public_id() -> str:
    # 24 characters of 62 is ~143 bits: not guessable, not enumerable.
    return "pay_" + "".join(secrets.choice(PUBLIC_ID_ALPHABET) for _ in range(24))


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
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="payments")
    public_id = models.CharField(max_length=40, unique=True, default=new_public_id, editable=False)
    amount_minor = models.BigIntegerField(help_text="Amount in the currency's minor unit (cents).")
    currency = models.CharField(
        max_length=3, validators=[RegexValidator(r"^[A-Z]{3}$"), validate_currency]
    )
    status = FSMField(
        max_length=20, choices=PaymentStatus.choices, default=PaymentStatus.PENDING, protected=True
    )
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
            models.CheckConstraint(
                condition=models.Q(status__in=PaymentStatus.values), name="payment_status_valid"
            ),
            models.CheckConstraint(condition=models.Q(amount_minor__gt=0), name="payment_amount_positive"),
            models.CheckConstraint(
                condition=models.Q(currency__regex=r"^[A-Z]{3}$"), name="payment_currency_code"
            ),
            models.UniqueConstraint(
                fields=["merchant", "idempotency_key"], name="payment_idempotency_key_per_merchant"
            ),
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="payment_status_created")]
        permissions = [
            ("process_payment", "Can send a pending payment to the gateway now"),
            ("retry_payment", "Can retry a failed payment"),
            ("cancel_payment", "Can cancel a pending payment"),
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
    idempotency_key = models.CharField(max_length=100, unique=True)
    outcome = models.CharField(max_length=20, choices=AttemptOutcome.choices, default=AttemptOutcome.PENDING)
    gateway_reference = models.CharField(max_length=100, blank=True, db_index=True)
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
            models.CheckConstraint(
                condition=models.Q(outcome__in=AttemptOutcome.values), name="attempt_outcome_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.payment.public_id} attempt {self.number}"


class PaymentEvent(models.Model):
    """Append-only history of a payment's status."""

    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="events")
    from_status = models.CharField(max_length=20, blank=True)
    to_status = models.CharField(max_length=20)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_label = models.CharField(max_length=100, blank=True, help_text="Who, when not a user: worker, system.")
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.payment.public_id}: {self.from_status or '-'} -> {self.to_status}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("Payment events are append-only.")
        super().save(*args, **kwargs)


class SimulatedGatewayRecord(models.Model):
    """The simulated gateway's own ledger, keyed by idempotency key. A real processor keeps
    this on its side; ours lives in the database so every worker process shares it."""

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
