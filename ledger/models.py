"""The double-entry ledger. Amounts are signed integers in the account currency's minor unit:
positive credits an account (what Paydesk owes grows), negative debits it. Every transaction's
entries sum to zero per currency and entries are never updated or deleted; both rules are
enforced by PostgreSQL triggers (migration 0002), not only here."""

import secrets
import string

from django.conf import settings
from django.db import models
from django_fsm import FSMField, FSMModelMixin, transition

from ledger.states import (
    MERCHANT_KINDS,
    PAYOUT_TRANSITIONS,
    PLATFORM_KINDS,
    AccountKind,
    Cause,
    PayoutOrigin,
    PayoutStatus,
)
from payments.models import Merchant, Payment, Refund, StatusEvent
from payments.money import format_minor

PUBLIC_ID_ALPHABET = string.ascii_letters + string.digits


def new_payout_id() -> str:
    return "po_" + "".join(secrets.choice(PUBLIC_ID_ALPHABET) for _ in range(24))


class Account(models.Model):
    """One balance: a merchant's (pending, available, reserved, payouts in transit) or the
    platform's (processor receivable, fee revenue, ...), in one currency. Merchant accounts keep
    a running balance updated under a row lock in the posting's transaction; platform accounts
    are summed from their entries (they would otherwise be one hot row for every posting)."""

    merchant = models.ForeignKey(
        Merchant, null=True, blank=True, on_delete=models.PROTECT, related_name="ledger_accounts"
    )
    kind = models.CharField(max_length=30, choices=AccountKind.choices)
    currency = models.CharField(max_length=3)
    balance_minor = models.BigIntegerField(
        default=0, help_text="Running balance (merchant accounts), kept with every posting under a row lock."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["merchant__name", "currency", "kind"]
        constraints = [
            models.UniqueConstraint(
                fields=["merchant", "kind", "currency"],
                condition=models.Q(merchant__isnull=False),
                name="ledger_account_once_per_merchant",
            ),
            models.UniqueConstraint(
                fields=["kind", "currency"],
                condition=models.Q(merchant__isnull=True),
                name="ledger_account_once_per_platform",
            ),
            models.CheckConstraint(
                condition=(models.Q(merchant__isnull=False, kind__in=MERCHANT_KINDS))
                | models.Q(merchant__isnull=True, kind__in=PLATFORM_KINDS),
                name="ledger_account_kind_matches_owner",
            ),
            models.CheckConstraint(condition=models.Q(currency__regex=r"^[A-Z]{3}$"), name="ledger_account_currency"),
            models.CheckConstraint(
                condition=models.Q(merchant__isnull=False) | models.Q(balance_minor=0),
                name="ledger_platform_balance_not_kept",
            ),
        ]
        permissions = [("run_drift_check", "Can run the ledger drift check")]

    def __str__(self) -> str:
        owner = self.merchant.name if self.merchant is not None else "Platform"
        return f"{owner} · {self.get_kind_display()} · {self.currency}"

    @property
    def keeps_balance(self) -> bool:
        return self.merchant_id is not None

    @property
    def balance_display(self) -> str:
        return format_minor(self.balance_minor, self.currency)


class Transaction(models.Model):
    """Two or more entries that sum to zero per currency, posted in one database transaction
    with the state change that caused it. The idempotency key makes a repeat post nothing."""

    idempotency_key = models.CharField(max_length=200, unique=True)
    cause = models.CharField(max_length=20, choices=Cause.choices)
    merchant = models.ForeignKey(
        Merchant, null=True, blank=True, on_delete=models.PROTECT, related_name="ledger_transactions"
    )
    payment = models.ForeignKey(
        Payment, null=True, blank=True, on_delete=models.PROTECT, related_name="ledger_transactions"
    )
    refund = models.ForeignKey(
        Refund, null=True, blank=True, on_delete=models.PROTECT, related_name="ledger_transactions"
    )
    payout = models.ForeignKey(
        "Payout", null=True, blank=True, on_delete=models.PROTECT, related_name="ledger_transactions"
    )
    corrects = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="corrections",
        help_text="The earlier transaction this one corrects (entries are never edited).",
    )
    memo = models.CharField(max_length=255, blank=True)
    posted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "ledger transaction"
        constraints = [
            models.CheckConstraint(condition=models.Q(cause__in=Cause.values), name="ledger_transaction_cause_valid"),
            models.CheckConstraint(
                condition=~models.Q(cause=Cause.CORRECTION) | models.Q(corrects__isnull=False),
                name="ledger_correction_names_corrected",
            ),
        ]
        indexes = [models.Index(fields=["merchant", "-id"], name="ledger_tx_merchant_recent")]
        permissions = [("post_adjustment", "Can post a ledger adjustment or correction")]

    def __str__(self) -> str:
        return f"{self.get_cause_display()} #{self.pk} ({self.idempotency_key})"


class Entry(models.Model):
    """One line of a transaction on one account. Immutable (a PostgreSQL trigger refuses
    UPDATE and DELETE). `balance_after_minor` is the account's running balance after this
    entry, for merchant accounts: statements read it directly."""

    transaction = models.ForeignKey(Transaction, on_delete=models.PROTECT, related_name="entries")
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="entries")
    amount_minor = models.BigIntegerField(help_text="Positive credits the account, negative debits it.")
    balance_after_minor = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "entries"
        constraints = [
            models.CheckConstraint(condition=~models.Q(amount_minor=0), name="ledger_entry_amount_nonzero"),
        ]
        indexes = [
            # Statements page an account's entries newest first; the drift check sums them.
            models.Index(fields=["account", "-id"], include=["amount_minor"], name="ledger_entry_account_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.account}: {self.amount_minor:+d}"

    @property
    def amount_display(self) -> str:
        return format_minor(self.amount_minor, self.account.currency)

    @property
    def balance_after_display(self) -> str:
        if self.balance_after_minor is None:
            return ""
        return format_minor(self.balance_after_minor, self.account.currency)


class Price(models.Model):
    """A fee: a rate in basis points (1/100 of a percent) of the amount plus a fixed amount in
    minor units. A merchant's price for a currency wins; else the platform default (no merchant)
    for the currency; else LEDGER_DEFAULT_FEE_RATE_BPS with no fixed part."""

    merchant = models.ForeignKey(Merchant, null=True, blank=True, on_delete=models.CASCADE, related_name="prices")
    currency = models.CharField(max_length=3)
    rate_bps = models.PositiveIntegerField("rate (basis points)", help_text="290 = 2.90 %.")
    fixed_minor = models.PositiveBigIntegerField("fixed part (minor units)", default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["merchant__name", "currency"]
        constraints = [
            models.UniqueConstraint(
                fields=["merchant", "currency"], condition=models.Q(merchant__isnull=False), name="price_per_merchant"
            ),
            models.UniqueConstraint(
                fields=["currency"], condition=models.Q(merchant__isnull=True), name="price_default_per_currency"
            ),
            models.CheckConstraint(condition=models.Q(rate_bps__lte=10_000), name="price_rate_at_most_100_percent"),
            models.CheckConstraint(condition=models.Q(currency__regex=r"^[A-Z]{3}$"), name="price_currency_code"),
        ]

    def __str__(self) -> str:
        owner = self.merchant.name if self.merchant is not None else "Default"
        return f"{owner} {self.currency}: {self.rate_bps / 100:.2f} % + {format_minor(self.fixed_minor, self.currency)}"


class MerchantTerms(models.Model):
    """How a merchant's money moves: the delay before captured funds become available, and
    whether the daily schedule pays them out."""

    merchant = models.OneToOneField(Merchant, on_delete=models.CASCADE, related_name="ledger_terms")
    release_delay_days = models.PositiveSmallIntegerField(default=2, help_text="T+N: days from capture to available.")
    payouts_paused = models.BooleanField(default=False, help_text="The daily schedule skips this merchant.")

    class Meta:
        verbose_name_plural = "merchant terms"

    def __str__(self) -> str:
        return f"{self.merchant}: T+{self.release_delay_days}"


class CapturedFunds(models.Model):
    """A captured payment's money for the merchant: gross, fee, net (the fee as computed at
    capture, with the price it came from), and when the net becomes available."""

    payment = models.OneToOneField(Payment, on_delete=models.PROTECT, related_name="captured_funds")
    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="+")
    currency = models.CharField(max_length=3)
    gross_minor = models.BigIntegerField()
    fee_minor = models.BigIntegerField()
    net_minor = models.BigIntegerField()
    rate_bps = models.PositiveIntegerField()
    fixed_minor = models.PositiveBigIntegerField()
    capture = models.OneToOneField(Transaction, on_delete=models.PROTECT, related_name="+")
    available_at = models.DateTimeField()
    released_in = models.ForeignKey(
        Transaction, null=True, blank=True, on_delete=models.PROTECT, related_name="released_funds"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "captured funds"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(net_minor=models.F("gross_minor") - models.F("fee_minor")),
                name="funds_net_is_gross_less_fee",
            ),
            models.CheckConstraint(
                condition=models.Q(fee_minor__gte=0, net_minor__gte=0), name="funds_fee_within_gross"
            ),
        ]
        indexes = [
            models.Index(
                fields=["available_at"], condition=models.Q(released_in__isnull=True), name="funds_unreleased_due"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.payment.public_id}: net {self.net_display}"

    @property
    def gross_display(self) -> str:
        return format_minor(self.gross_minor, self.currency)

    @property
    def fee_display(self) -> str:
        return format_minor(self.fee_minor, self.currency)

    @property
    def net_display(self) -> str:
        return format_minor(self.net_minor, self.currency)

    @property
    def price_display(self) -> str:
        return f"{self.rate_bps / 100:.2f} % + {format_minor(self.fixed_minor, self.currency)}"


def _payout_sources(name: str) -> list[str]:
    return list(PAYOUT_TRANSITIONS[name][0])


def _payout_target(name: str) -> str:
    return PAYOUT_TRANSITIONS[name][1]


class Payout(FSMModelMixin, models.Model):
    """Money from a merchant's available balance to their bank. It leaves the balance when the
    payout becomes pending (created by the schedule, or approved) and returns if it fails."""

    merchant = models.ForeignKey(Merchant, on_delete=models.PROTECT, related_name="payouts")
    public_id = models.CharField(max_length=40, unique=True, default=new_payout_id, editable=False)
    currency = models.CharField(max_length=3)
    amount_minor = models.BigIntegerField()
    status = FSMField(max_length=20, choices=PayoutStatus.choices, default=PayoutStatus.PENDING, protected=True)
    origin = models.CharField(max_length=20, choices=PayoutOrigin.choices)
    idempotency_key = models.CharField(max_length=200, unique=True)
    reason = models.TextField(blank=True)
    needs_approval = models.BooleanField(default=False)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decision_note = models.TextField(blank=True)
    bank_reference = models.CharField(max_length=100, blank=True)
    failure_reason = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=PayoutStatus.values), name="payout_status_valid"),
            models.CheckConstraint(condition=models.Q(amount_minor__gt=0), name="payout_amount_positive"),
            models.CheckConstraint(
                condition=models.Q(decided_by__isnull=True) | ~models.Q(decided_by=models.F("requested_by")),
                name="payout_decider_not_requester",
            ),
        ]
        permissions = [
            ("request_payout", "Can ask for a payout on demand"),
            ("approve_payout", "Can approve or reject a payout asked by someone else"),
            ("settle_payout", "Can mark a payout paid or failed"),
        ]

    def __str__(self) -> str:
        return self.public_id

    @property
    def amount_display(self) -> str:
        return format_minor(self.amount_minor, self.currency)

    @transition(field=status, source=_payout_sources("approve"), target=_payout_target("approve"))
    def approve(self):
        pass

    @transition(field=status, source=_payout_sources("reject"), target=_payout_target("reject"))
    def reject(self):
        pass

    @transition(field=status, source=_payout_sources("send"), target=_payout_target("send"))
    def send(self):
        pass

    @transition(field=status, source=_payout_sources("mark_paid"), target=_payout_target("mark_paid"))
    def mark_paid(self):
        pass

    @transition(field=status, source=_payout_sources("mark_failed"), target=_payout_target("mark_failed"))
    def mark_failed(self):
        pass


class PayoutEvent(StatusEvent):
    """Append-only history of a payout's status."""

    payout = models.ForeignKey(Payout, on_delete=models.PROTECT, related_name="events")

    class Meta(StatusEvent.Meta):
        pass

    def __str__(self) -> str:
        return f"{self.payout.public_id}: {self.from_status or '-'} -> {self.to_status}"


class DriftCheck(models.Model):
    """One run of `manage.py ledger_drift_check`: kept balances against the sums of entries."""

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    accounts_checked = models.PositiveIntegerField()
    drifted = models.JSONField(default=list, help_text="[{account, kept, summed}] for every account that differs.")
    unbalanced_transactions = models.JSONField(default=list)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"drift check {self.started_at:%Y-%m-%d %H:%M} ({'clean' if self.is_clean else 'DRIFT'})"

    @property
    def is_clean(self) -> bool:
        return not self.drifted and not self.unbalanced_transactions
