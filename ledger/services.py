"""Every write to the ledger. Postings run inside the caller's database transaction (the
payment's, the refund's, the payout's), so money moves exactly when the state change commits.

Public for other apps (reconciliation, staff tools):
- `transaction_post(...)`: post balanced entries under an idempotency key; a repeat returns the first.
- `adjustment_post(...)`: move money between a merchant's (or a platform) account and the
  platform's adjustments account, with a reason.
- `transaction_correct(...)`: reverse an earlier transaction with a new one that names it.
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from backoffice.actors import Actor, actor_user
from backoffice.services import audit_record, job_enqueue
from ledger.models import (
    Account,
    CapturedFunds,
    Entry,
    MerchantTerms,
    Payout,
    PayoutEvent,
    Price,
    Transaction,
)
from ledger.signals import payout_status_changed
from ledger.states import MERCHANT_KINDS, PLATFORM_KINDS, AccountKind, Cause, PayoutOrigin, PayoutStatus
from payments.models import Merchant, Payment, Refund
from payments.money import format_minor, major_to_minor, validate_currency

K = AccountKind
SEND_PAYOUT_JOB = "ledger.jobs.send_payout"


class LedgerError(ValidationError):
    """A refused ledger operation; its message is fit to show the user."""


Line = tuple[Account, int]


# --- accounts ------------------------------------------------------------------------------


def _accounts(merchant_id: int | None, currency: str, *, with_platform: bool = False) -> dict[str, Account]:
    """The merchant's (or, with None, the platform's) accounts in a currency, created on first
    use; with_platform adds the platform's in the same query."""
    wanted = [(merchant_id, MERCHANT_KINDS if merchant_id is not None else PLATFORM_KINDS)]
    if with_platform and merchant_id is not None:
        wanted.append((None, PLATFORM_KINDS))
    owners = Q(merchant_id=merchant_id) if merchant_id is not None else Q(merchant__isnull=True)
    if with_platform:
        owners |= Q(merchant__isnull=True)
    found = {a.kind: a for a in Account.objects.filter(owners, currency=currency)}
    missing = [(owner, kind) for owner, kinds in wanted for kind in kinds if kind not in found]
    if missing:
        validate_currency(currency)
        # Two first postings at once both try: the unique constraints keep one of each.
        Account.objects.bulk_create(
            [Account(merchant_id=owner, kind=kind, currency=currency) for owner, kind in missing],
            ignore_conflicts=True,
        )
        found = {a.kind: a for a in Account.objects.filter(owners, currency=currency)}
    return found


def merchant_accounts(merchant: Merchant | int, currency: str) -> dict[str, Account]:
    return _accounts(merchant.pk if isinstance(merchant, Merchant) else merchant, currency)


def platform_accounts(currency: str) -> dict[str, Account]:
    return _accounts(None, currency)


# --- posting ---------------------------------------------------------------------------------


def _check_lines(lines: Sequence[Line]) -> None:
    if len(lines) < 2:
        raise LedgerError("A ledger transaction needs at least two entries.", code="too_few_entries")
    totals: dict[str, int] = defaultdict(int)
    for account, amount in lines:
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise LedgerError("Ledger amounts are whole numbers of minor units.", code="not_minor_units")
        if amount == 0:
            raise LedgerError("A ledger entry cannot be zero.", code="zero_entry")
        if account.pk is None:
            raise LedgerError("Post to saved accounts only.", code="unsaved_account")
        totals[account.currency] += amount
    unbalanced = {currency: total for currency, total in totals.items() if total}
    if unbalanced:
        raise LedgerError(
            f"The entries do not sum to zero per currency: {unbalanced}.", code="unbalanced", params=unbalanced
        )


def _post(
    *,
    cause: str,
    idempotency_key: str,
    lines: Sequence[Line],
    memo: str = "",
    merchant_id: int | None = None,
    payment: Payment | None = None,
    refund: Refund | None = None,
    payout: Payout | None = None,
    corrects: Transaction | None = None,
    posted_by: Actor = None,
) -> tuple[Transaction, bool]:
    """Post and say whether this call posted (False: the key was already posted)."""
    _check_lines(lines)
    if not idempotency_key or len(idempotency_key) > 200:
        raise LedgerError("An idempotency key of 1 to 200 characters is required.", code="idempotency_key")
    # No savepoint of its own: a failure here fails the caller's transaction, posting and all.
    with transaction.atomic(savepoint=False):
        # Merchant accounts keep running totals: lock them in id order (no deadlock between
        # postings), then check the key, so a concurrent duplicate waits and finds the first.
        kept_ids = sorted({account.pk for account, _ in lines if account.keeps_balance})
        locked = {a.pk: a for a in Account.objects.select_for_update().filter(pk__in=kept_ids).order_by("pk")}
        existing = Transaction.objects.filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing, False
        fields = {
            "idempotency_key": idempotency_key,
            "cause": cause,
            "memo": memo[:255],
            "merchant_id": merchant_id,
            "payment": payment,
            "refund": refund,
            "payout": payout,
            "corrects": corrects,
            "posted_by": actor_user(posted_by),
        }
        if locked:
            posted = Transaction.objects.create(**fields)
        else:
            # Platform-only postings hold no lock: the unique key settles a race.
            try:
                with transaction.atomic():
                    posted = Transaction.objects.create(**fields)
            except IntegrityError:
                return Transaction.objects.get(idempotency_key=idempotency_key), False
        entries = []
        for account, amount in lines:
            balance_after = None
            if account.pk in locked:
                kept = locked[account.pk]
                kept.balance_minor += amount
                balance_after = kept.balance_minor
            entries.append(
                Entry(transaction=posted, account_id=account.pk, amount_minor=amount, balance_after_minor=balance_after)
            )
        Entry.objects.bulk_create(entries)
        if locked:
            Account.objects.bulk_update(locked.values(), ["balance_minor"])
    return posted, True


def transaction_post(
    *,
    cause: str,
    idempotency_key: str,
    lines: Sequence[Line],
    memo: str = "",
    merchant: Merchant | None = None,
    payment: Payment | None = None,
    refund: Refund | None = None,
    payout: Payout | None = None,
    corrects: Transaction | None = None,
    posted_by: Actor = None,
) -> Transaction:
    """Post entries (account, signed minor amount) that sum to zero per currency, in the
    caller's transaction; locks the merchant accounts touched (id order) and updates their
    running balances. The same idempotency key again returns the first transaction, unchanged."""
    if cause not in Cause.values:
        raise LedgerError(f"Unknown cause {cause!r}.", code="cause")
    posted, _ = _post(
        cause=cause,
        idempotency_key=idempotency_key,
        lines=lines,
        memo=memo,
        merchant_id=getattr(merchant, "pk", None),
        payment=payment,
        refund=refund,
        payout=payout,
        corrects=corrects,
        posted_by=posted_by,
    )
    return posted


def adjustment_post(
    *,
    currency: str,
    amount_minor: int,
    reason: str,
    idempotency_key: str,
    merchant: Merchant | None = None,
    account_kind: str = AccountKind.AVAILABLE,
    actor: Actor = None,
    corrects: Transaction | None = None,
) -> Transaction:
    """Credit (positive) or debit (negative) one account against the platform's adjustments
    account, with a required reason and an audit entry. Idempotent by key: a repeat returns
    the first adjustment. For reconciliation and staff corrections."""
    reason = (reason or "").strip()
    if not reason:
        raise LedgerError({"reason": ["A reason is required for an adjustment."]}, code="reason_required")
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor == 0:
        raise LedgerError({"amount_minor": ["Give a non-zero whole number of minor units."]}, code="amount")
    validate_currency(currency)
    kinds = MERCHANT_KINDS if merchant is not None else PLATFORM_KINDS
    if account_kind not in kinds or account_kind == K.ADJUSTMENTS:
        raise LedgerError({"account_kind": [f"Choose one of {', '.join(k for k in kinds if k != K.ADJUSTMENTS)}."]})
    with transaction.atomic():
        accounts = _accounts(getattr(merchant, "pk", None), currency, with_platform=True)
        target, counter = accounts[account_kind], accounts[K.ADJUSTMENTS]
        posted, created = _post(
            cause=Cause.ADJUSTMENT,
            idempotency_key=idempotency_key,
            lines=[(target, amount_minor), (counter, -amount_minor)],
            memo=reason,
            merchant_id=getattr(merchant, "pk", None),
            corrects=corrects,
            posted_by=actor,
        )
        if created:
            audit_record(
                actor=actor,
                action="ledger_adjustment",
                target=posted,
                reason=reason,
                details={"account": str(target), "amount_minor": amount_minor},
            )
    return posted


def transaction_correct(
    *, corrected: Transaction, reason: str, actor: Actor = None, idempotency_key: str = ""
) -> Transaction:
    """Reverse a transaction with a new one naming it (entries are never edited); one full
    reversal per transaction unless a distinct key is given."""
    reason = (reason or "").strip()
    if not reason:
        raise LedgerError({"reason": ["A reason is required for a correction."]}, code="reason_required")
    with transaction.atomic():
        lines = [(entry.account, -entry.amount_minor) for entry in corrected.entries.select_related("account")]
        posted, created = _post(
            cause=Cause.CORRECTION,
            idempotency_key=idempotency_key or f"correct:{corrected.pk}",
            lines=lines,
            memo=reason,
            merchant_id=corrected.merchant_id,
            payment=corrected.payment,
            refund=corrected.refund,
            payout=corrected.payout,
            corrects=corrected,
            posted_by=actor,
        )
        if created:
            audit_record(actor=actor, action="ledger_correction", target=posted, reason=reason)
    return posted


# --- fees --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fee:
    rate_bps: int
    fixed_minor: int
    fee_minor: int


def fee_compute(*, amount_minor: int, rate_bps: int, fixed_minor: int) -> int:
    """The fee in minor units: the rate's part rounded half up to a whole minor unit (exact
    integer arithmetic, no floats), plus the fixed part, never more than the amount."""
    rate_part = (amount_minor * rate_bps + 5_000) // 10_000
    return min(rate_part + fixed_minor, amount_minor)


def price_for(*, merchant: Merchant | int, currency: str) -> tuple[int, int]:
    """(rate_bps, fixed_minor): the merchant's price for the currency, else the default for the
    currency, else LEDGER_DEFAULT_FEE_RATE_BPS with no fixed part."""
    price = (
        Price.objects.filter(Q(merchant=merchant) | Q(merchant__isnull=True), currency=currency)
        .order_by(F("merchant").asc(nulls_last=True))
        .values_list("rate_bps", "fixed_minor")
        .first()
    )
    return price or (settings.LEDGER_DEFAULT_FEE_RATE_BPS, 0)


def fee_for(*, merchant: Merchant | int, currency: str, amount_minor: int) -> Fee:
    rate_bps, fixed_minor = price_for(merchant=merchant, currency=currency)
    return Fee(
        rate_bps, fixed_minor, fee_compute(amount_minor=amount_minor, rate_bps=rate_bps, fixed_minor=fixed_minor)
    )


def _release_delay_days(merchant_id: int) -> int:
    days = MerchantTerms.objects.filter(merchant_id=merchant_id).values_list("release_delay_days", flat=True).first()
    return settings.LEDGER_RELEASE_DELAY_DAYS if days is None else days


# --- postings caused by payments and refunds (called from ledger.receivers) ---------------------


def capture_post(*, payment: Payment, memo: str = "", posted_by: Actor = None) -> Transaction:
    """A captured payment: the processor owes us the gross; the merchant's pending balance gets
    the net; fee revenue gets the fee. Records the funds and when they become available."""
    currency, gross = payment.currency, payment.amount_minor
    fee = fee_for(merchant=payment.merchant_id, currency=currency, amount_minor=gross)
    net = gross - fee.fee_minor
    accounts = _accounts(payment.merchant_id, currency, with_platform=True)
    lines = [
        (accounts[K.PROCESSOR_RECEIVABLE], -gross),
        (accounts[K.PENDING], net),
        (accounts[K.FEE_REVENUE], fee.fee_minor),
    ]
    posted, created = _post(
        cause=Cause.CAPTURE,
        idempotency_key=f"capture:{payment.public_id}",
        lines=[line for line in lines if line[1]],
        memo=memo or f"capture of {payment.public_id}",
        merchant_id=payment.merchant_id,
        payment=payment,
        posted_by=posted_by,
    )
    if created:
        now = timezone.now()
        CapturedFunds.objects.create(
            payment=payment,
            merchant_id=payment.merchant_id,
            currency=currency,
            gross_minor=gross,
            fee_minor=fee.fee_minor,
            net_minor=net,
            rate_bps=fee.rate_bps,
            fixed_minor=fee.fixed_minor,
            capture=posted,
            available_at=now + timedelta(days=_release_delay_days(payment.merchant_id)),
            # Nothing to release when the fee took it all.
            released_in=posted if net == 0 else None,
        )
    return posted


def capture_post_many(captures: Sequence[tuple[Payment, str, Actor]]) -> None:
    """capture_post for many payments (payment, memo, posted_by) in the caller's transaction:
    the same transactions, entries, kept balances (in the given order) and captured funds as
    one at a time, in a few statements per batch instead of nine per payment. A payment
    already posted (its key) is skipped, as capture_post returns the first posting."""
    if len(captures) == 1:
        payment, memo, posted_by = captures[0]
        capture_post(payment=payment, memo=memo, posted_by=posted_by)
        return
    groups = sorted({(payment.merchant_id, payment.currency) for payment, _, _ in captures})
    with transaction.atomic(savepoint=False):
        accounts = {group: _accounts(group[0], group[1], with_platform=True) for group in groups}
        prices = {group: price_for(merchant=group[0], currency=group[1]) for group in groups}
        delays = {merchant_id: _release_delay_days(merchant_id) for merchant_id in {m for m, _ in groups}}
        postings = [_capture_lines(payment, accounts, prices) for payment, _, _ in captures]
        # As _post: lock the kept accounts in id order, then check the keys.
        kept_ids = sorted({account.pk for lines, _ in postings for account, _ in lines if account.keeps_balance})
        locked = {a.pk: a for a in Account.objects.select_for_update().filter(pk__in=kept_ids).order_by("pk")}
        keys = [f"capture:{payment.public_id}" for payment, _, _ in captures]
        seen = set(Transaction.objects.filter(idempotency_key__in=keys).values_list("idempotency_key", flat=True))
        fresh = []
        for (payment, memo, posted_by), (lines, fee), key in zip(captures, postings, keys, strict=True):
            if key not in seen:
                seen.add(key)
                fresh.append((payment, memo, posted_by, lines, fee, key))
        if not fresh:
            return
        posted = Transaction.objects.bulk_create(
            [
                Transaction(
                    idempotency_key=key,
                    cause=Cause.CAPTURE,
                    memo=(memo or f"capture of {payment.public_id}")[:255],
                    merchant_id=payment.merchant_id,
                    payment=payment,
                    posted_by=actor_user(posted_by),
                )
                for payment, memo, posted_by, _, _, key in fresh
            ]
        )
        entries = []
        for (_, _, _, lines, _, _), made in zip(fresh, posted, strict=True):
            for account, amount in lines:
                balance_after = None
                if account.pk in locked:
                    kept = locked[account.pk]
                    kept.balance_minor += amount
                    balance_after = kept.balance_minor
                entries.append(
                    Entry(
                        transaction=made, account_id=account.pk, amount_minor=amount, balance_after_minor=balance_after
                    )
                )
        Entry.objects.bulk_create(entries)
        if locked:
            Account.objects.bulk_update(locked.values(), ["balance_minor"])
        now = timezone.now()
        CapturedFunds.objects.bulk_create(
            [
                CapturedFunds(
                    payment=payment,
                    merchant_id=payment.merchant_id,
                    currency=payment.currency,
                    gross_minor=payment.amount_minor,
                    fee_minor=fee.fee_minor,
                    net_minor=payment.amount_minor - fee.fee_minor,
                    rate_bps=fee.rate_bps,
                    fixed_minor=fee.fixed_minor,
                    capture=made,
                    available_at=now + timedelta(days=delays[payment.merchant_id]),
                    released_in=made if payment.amount_minor == fee.fee_minor else None,
                )
                for (payment, _, _, _, fee, _), made in zip(fresh, posted, strict=True)
            ]
        )


def _capture_lines(payment: Payment, accounts: dict, prices: dict) -> tuple[list[Line], "Fee"]:
    group = (payment.merchant_id, payment.currency)
    rate_bps, fixed_minor = prices[group]
    gross = payment.amount_minor
    fee = Fee(rate_bps, fixed_minor, fee_compute(amount_minor=gross, rate_bps=rate_bps, fixed_minor=fixed_minor))
    chosen = accounts[group]
    lines = [
        (chosen[K.PROCESSOR_RECEIVABLE], -gross),
        (chosen[K.PENDING], gross - fee.fee_minor),
        (chosen[K.FEE_REVENUE], fee.fee_minor),
    ]
    lines = [line for line in lines if line[1]]
    _check_lines(lines)
    return lines, fee


def _refund_lines(refund: Refund, source: str, target: str) -> list[Line]:
    payment = refund.payment
    accounts = _accounts(payment.merchant_id, payment.currency, with_platform=True)
    return [(accounts[source], -refund.amount_minor), (accounts[target], refund.amount_minor)]


def refund_hold_post(*, refund: Refund) -> Transaction:
    """A refund asked for: its amount moves from available to reserved, so it cannot be paid
    out meanwhile. Available may go negative (the stated rule: see docs/architecture.md)."""
    posted, _ = _post(
        cause=Cause.REFUND_HOLD,
        idempotency_key=f"refund-hold:{refund.public_id}",
        lines=_refund_lines(refund, K.AVAILABLE, K.RESERVED),
        memo=f"refund {refund.public_id} of {refund.payment.public_id} reserved",
        merchant_id=refund.payment.merchant_id,
        payment=refund.payment,
        refund=refund,
    )
    return posted


def refund_post(*, refund: Refund) -> Transaction:
    """A refund the processor made: the reserve goes to the processor (it owes us that much
    less). The fee of the payment is kept. A refund with no hold (older than the ledger) is
    taken from available."""
    held = Transaction.objects.filter(idempotency_key=f"refund-hold:{refund.public_id}").exists()
    posted, _ = _post(
        cause=Cause.REFUND,
        idempotency_key=f"refund:{refund.public_id}",
        lines=_refund_lines(refund, K.RESERVED if held else K.AVAILABLE, K.PROCESSOR_RECEIVABLE),
        memo=f"refund {refund.public_id} of {refund.payment.public_id} sent",
        merchant_id=refund.payment.merchant_id,
        payment=refund.payment,
        refund=refund,
    )
    return posted


def refund_release_post(*, refund: Refund) -> Transaction | None:
    """A refund that failed or was rejected: its reserve goes back to available."""
    if not Transaction.objects.filter(idempotency_key=f"refund-hold:{refund.public_id}").exists():
        return None
    posted, _ = _post(
        cause=Cause.REFUND_RELEASE,
        idempotency_key=f"refund-release:{refund.public_id}",
        lines=_refund_lines(refund, K.RESERVED, K.AVAILABLE),
        memo=f"refund {refund.public_id} {refund.status}: reserve returned",
        merchant_id=refund.payment.merchant_id,
        payment=refund.payment,
        refund=refund,
    )
    return posted


# --- pending -> available ----------------------------------------------------------------------


def funds_release_due(*, now: datetime | None = None, batch_size: int | None = None) -> int:
    """Move the net of every capture whose delay has passed from pending to available: one
    transaction per batch, one posting per merchant and currency in it. Rows are taken with
    SKIP LOCKED and marked in the same transaction, so two runs at once release each once."""
    now = now or timezone.now()
    batch_size = batch_size or settings.LEDGER_RELEASE_BATCH_SIZE
    released = 0
    while True:
        with transaction.atomic():
            due = list(
                CapturedFunds.objects.select_for_update(skip_locked=True)
                .filter(released_in__isnull=True, available_at__lte=now)
                .order_by("merchant_id", "currency", "id")
                .values_list("id", "merchant_id", "currency", "net_minor")[:batch_size]
            )
            groups: dict[tuple[int, str], list[tuple[int, int]]] = defaultdict(list)
            for funds_id, merchant_id, currency, net in due:
                groups[(merchant_id, currency)].append((funds_id, net))
            for (merchant_id, currency), funds in groups.items():
                accounts = _accounts(merchant_id, currency)
                total = sum(net for _, net in funds)
                posted, _ = _post(
                    cause=Cause.RELEASE,
                    # The first funds row of a batch is released once, so it names the batch.
                    idempotency_key=f"release:{funds[0][0]}",
                    lines=[(accounts[K.PENDING], -total), (accounts[K.AVAILABLE], total)],
                    memo=f"{len(funds)} capture(s) available",
                    merchant_id=merchant_id,
                )
                CapturedFunds.objects.filter(pk__in=[funds_id for funds_id, _ in funds]).update(released_in=posted)
        released += len(due)
        if len(due) < batch_size:
            return released


# --- payouts ------------------------------------------------------------------------------------


def _payout_event(
    payout: Payout, *, from_status: str, actor: Actor = None, actor_label: str = "", reason: str = ""
) -> PayoutEvent:
    user = actor_user(actor)
    event = PayoutEvent.objects.create(
        payout=payout,
        from_status=from_status,
        to_status=payout.status,
        actor=user,
        actor_label=actor_label or ("" if user else "system"),
        reason=reason,
    )
    payout_status_changed.send(
        sender=Payout, payout=payout, event=event, from_status=from_status, to_status=payout.status
    )
    return event


def _payout_transition(
    payout: Payout, name: str, *, actor: Actor = None, actor_label: str = "", reason: str = ""
) -> None:
    from_status = payout.status
    getattr(payout, name)()
    payout.save()
    _payout_event(payout, from_status=from_status, actor=actor, actor_label=actor_label, reason=reason)


def _payout_move(
    payout: Payout, cause: str, source: str, target: str, *, actor: Actor = None, memo: str = ""
) -> Transaction:
    accounts = _accounts(payout.merchant_id, payout.currency, with_platform=True)
    posted, _ = _post(
        cause=cause,
        idempotency_key=f"{cause}:{payout.public_id}",
        lines=[(accounts[source], -payout.amount_minor), (accounts[target], payout.amount_minor)],
        memo=memo or f"payout {payout.public_id}",
        merchant_id=payout.merchant_id,
        payout=payout,
        posted_by=actor,
    )
    return posted


def _locked_available(merchant_id: int, currency: str) -> Account:
    account = _accounts(merchant_id, currency)[K.AVAILABLE]
    return Account.objects.select_for_update().get(pk=account.pk)


def _enqueue_send(payout: Payout, *, actor: Actor = None) -> None:
    job_enqueue(
        func=SEND_PAYOUT_JOB, kwargs={"payout_id": payout.pk}, queue="payments", concerns=payout, requested_by=actor
    )


def payout_create_scheduled(*, merchant_id: int, currency: str, day: date) -> Payout | None:
    """The daily payout of a merchant's whole available balance in a currency: locks the
    available account, takes what is there (nothing when it is zero or negative), moves it to
    payouts in transit and queues the send. One per merchant, currency and day (the key)."""
    key = f"daily:{merchant_id}:{currency}:{day.isoformat()}"
    with transaction.atomic():
        available = _locked_available(merchant_id, currency)
        existing = Payout.objects.filter(idempotency_key=key).first()
        if existing is not None or available.balance_minor <= 0:
            return existing
        payout = Payout.objects.create(
            merchant_id=merchant_id,
            currency=currency,
            amount_minor=available.balance_minor,
            origin=PayoutOrigin.SCHEDULE,
            idempotency_key=key,
            reason=f"daily payout {day.isoformat()}",
        )
        _payout_event(payout, from_status="", actor_label="schedule", reason=payout.reason)
        _payout_move(payout, Cause.PAYOUT, K.AVAILABLE, K.PAYOUTS_IN_TRANSIT)
        _enqueue_send(payout)
    return payout


def payouts_run_daily(*, day: date | None = None) -> list[Payout]:
    """Create today's payout for every active merchant and currency with money available,
    unless its payouts are paused. Safe to run twice: the day is in each payout's key."""
    day = day or timezone.localdate()
    candidates = (
        Account.objects.filter(kind=K.AVAILABLE, balance_minor__gt=0, merchant__is_active=True)
        .exclude(merchant__ledger_terms__payouts_paused=True)
        .values_list("merchant_id", "currency")
    )
    payouts = [payout_create_scheduled(merchant_id=m, currency=c, day=day) for m, c in candidates]
    return [payout for payout in payouts if payout is not None]


def payout_approval_threshold_minor(currency: str) -> int:
    thresholds = settings.LEDGER_PAYOUT_APPROVAL_THRESHOLD
    return major_to_minor(thresholds.get(currency, thresholds.get("default", "0")), currency)


def _require_perm(user: Actor, perm: str, what: str) -> User:
    if not (isinstance(user, User) and user.pk and user.is_active and user.has_perm(perm)):
        raise LedgerError(f"You do not have permission to {what}.", code="permission_denied")
    return user


def _require_reason(reason: str, what: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise LedgerError({"reason": [f"A reason is required to {what}."]}, code="reason_required")
    return reason


def _refuse_short(available: Account, amount_minor: int) -> LedgerError:
    return LedgerError(
        {
            "amount_minor": [
                f"{format_minor(amount_minor, available.currency)} is more than the available balance of "
                f"{format_minor(available.balance_minor, available.currency)}."
            ]
        },
        code="insufficient_available",
    )


def payout_request(
    *,
    merchant: Merchant,
    currency: str,
    amount_minor: int | None,
    reason: str,
    requested_by: Actor,
    idempotency_key: str,
) -> Payout:
    """Finance pays a merchant out now (amount None = all available). Below the approval
    threshold the money moves at once and the send is queued; at or above it the payout waits
    for a second person. The same key returns the first payout."""
    requester = _require_perm(requested_by, "ledger.request_payout", "ask for payouts")
    reason = _require_reason(reason, "ask for a payout")
    validate_currency(currency)
    if amount_minor is not None and (isinstance(amount_minor, bool) or not isinstance(amount_minor, int)):
        raise LedgerError({"amount_minor": ["Give a whole number of minor units."]}, code="amount")
    if not idempotency_key:
        raise LedgerError("An idempotency key is required.", code="idempotency_key")
    with transaction.atomic():
        available = _locked_available(merchant.pk, currency)
        existing = Payout.objects.filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing
        amount = available.balance_minor if amount_minor is None else amount_minor
        if amount <= 0:
            raise LedgerError({"amount_minor": ["There is nothing available to pay out."]}, code="amount")
        if amount > available.balance_minor:
            raise _refuse_short(available, amount)
        needs_approval = amount >= payout_approval_threshold_minor(currency)
        payout = Payout.objects.create(
            merchant=merchant,
            currency=currency,
            amount_minor=amount,
            origin=PayoutOrigin.FINANCE,
            idempotency_key=idempotency_key,
            reason=reason,
            requested_by=requester,
            needs_approval=needs_approval,
            status=PayoutStatus.REQUESTED if needs_approval else PayoutStatus.PENDING,
        )
        _payout_event(payout, from_status="", actor=requested_by, reason=reason)
        audit_record(
            actor=requested_by,
            action="payout_request",
            target=payout,
            reason=reason,
            details={"amount_minor": amount, "currency": currency},
        )
        if not needs_approval:
            _payout_move(payout, Cause.PAYOUT, K.AVAILABLE, K.PAYOUTS_IN_TRANSIT, actor=requested_by)
            _enqueue_send(payout, actor=requested_by)
    return payout


def _locked_payout(payout: Payout | int) -> Payout:
    return (
        Payout.objects.select_for_update()
        .select_related("merchant")
        .get(pk=payout.pk if isinstance(payout, Payout) else payout)
    )


def _locked_for_second_person(payout: Payout, approver: User) -> Payout:
    """The payout, locked, once the decider (who has approve_payout: `_require_perm`) may decide it."""
    payout = _locked_payout(payout)
    if payout.requested_by_id == approver.pk:
        raise LedgerError("A payout this large needs a second person: you asked for this one.", code="four_eyes")
    if payout.status != PayoutStatus.REQUESTED:
        raise LedgerError(f"not awaiting approval (it is {payout.get_status_display().lower()})", code="wrong_status")
    return payout


def payout_approve(*, payout: Payout, approver: Actor, note: str = "") -> Payout:
    """A second person with approve_payout approves: locks the payout and the available balance,
    refuses if the balance no longer covers it, moves the money and queues the send."""
    with transaction.atomic():
        decider = _require_perm(approver, "ledger.approve_payout", "approve payouts")
        payout = _locked_for_second_person(payout, decider)
        available = _locked_available(payout.merchant_id, payout.currency)
        if payout.amount_minor > available.balance_minor:
            raise _refuse_short(available, payout.amount_minor)
        payout.decided_by, payout.decision_note = decider, note.strip()
        _payout_transition(payout, "approve", actor=approver, reason=note.strip() or "approved")
        _payout_move(payout, Cause.PAYOUT, K.AVAILABLE, K.PAYOUTS_IN_TRANSIT, actor=approver)
        audit_record(actor=approver, action="payout_approve", target=payout, reason=note.strip())
        _enqueue_send(payout, actor=approver)
    return payout


def payout_reject(*, payout: Payout, approver: Actor, note: str) -> Payout:
    """A second person rejects, with a required note; no money had moved."""
    note = _require_reason(note, "reject a payout")
    with transaction.atomic():
        decider = _require_perm(approver, "ledger.approve_payout", "reject payouts")
        payout = _locked_for_second_person(payout, decider)
        payout.decided_by, payout.decision_note = decider, note
        _payout_transition(payout, "reject", actor=approver, reason=note)
        audit_record(actor=approver, action="payout_reject", target=payout, reason=note)
    return payout


def payout_send(*, payout_id: int) -> Payout:
    """Hand a pending payout to the bank (simulated: the bank accepts and gives a reference)
    and mark it in transit. Anything else changes nothing, so a duplicate run sends nothing."""
    with transaction.atomic():
        payout = _locked_payout(payout_id)
        if payout.status != PayoutStatus.PENDING:
            return payout
        payout.bank_reference = f"bank_{payout.public_id}"
        _payout_transition(payout, "send", actor_label="worker", reason="handed to the bank")
    return payout


def payout_mark_paid(*, payout: Payout, actor: Actor, bank_reference: str = "", reason: str = "") -> Payout:
    """The bank confirmed the payout: in transit -> paid; the money leaves Paydesk's books."""
    _require_perm(actor, "ledger.settle_payout", "settle payouts")
    with transaction.atomic():
        payout = _locked_payout(payout)
        if payout.status != PayoutStatus.IN_TRANSIT:
            raise LedgerError(f"not in transit (it is {payout.get_status_display().lower()})", code="wrong_status")
        payout.bank_reference = (bank_reference or "").strip()[:100] or payout.bank_reference
        _payout_transition(payout, "mark_paid", actor=actor, reason=reason.strip() or "paid by the bank")
        _payout_move(payout, Cause.PAYOUT_PAID, K.PAYOUTS_IN_TRANSIT, K.PAYOUTS_SENT, actor=actor)
        audit_record(actor=actor, action="payout_mark_paid", target=payout, reason=reason)
    return payout


def payout_mark_failed(*, payout: Payout, actor: Actor, reason: str) -> Payout:
    """The bank refused or returned the payout: the money goes back to the available balance."""
    _require_perm(actor, "ledger.settle_payout", "settle payouts")
    reason = _require_reason(reason, "mark a payout failed")
    with transaction.atomic():
        payout = _locked_payout(payout)
        if payout.status not in (PayoutStatus.PENDING, PayoutStatus.IN_TRANSIT):
            raise LedgerError(
                f"not pending or in transit (it is {payout.get_status_display().lower()})", code="wrong_status"
            )
        payout.failure_reason = reason[:255]
        _payout_transition(payout, "mark_failed", actor=actor, reason=reason)
        _payout_move(payout, Cause.PAYOUT_FAILED, K.PAYOUTS_IN_TRANSIT, K.AVAILABLE, actor=actor, memo=reason)
        audit_record(actor=actor, action="payout_mark_failed", target=payout, reason=reason)
    return payout
