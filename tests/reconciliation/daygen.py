"""A generated processor day for reconciliation tests: our records (written directly, in bulk)
and the processor's report per docs/settlement-report.md, with known discrepancies injected.

`Injected` names every discrepancy by what identifies its exception: the report line's id, or
our record's key when their report lacks it.
"""

import csv
import io
import random
import secrets
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from django.conf import settings

from payments.models import Payment, PaymentAttempt, Refund
from payments.states import AttemptOutcome, PaymentStatus, RefundStatus

HEADER = [
    "line_id",
    "type",
    "processor_reference",
    "idempotency_key",
    "charge_reference",
    "amount_minor",
    "currency",
    "occurred_at",
]
CURRENCIES = ("EUR", "USD", "JPY")


def expected_fee(amount_minor: int) -> int:
    return (amount_minor * settings.PROCESSOR_FEE_BPS + 5000) // 10000 + settings.PROCESSOR_FEE_FIXED_MINOR


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class GeneratedDay:
    day: date
    csv_bytes: bytes
    # kind -> identities ("line:<line_id>", "attempt:<key>", "refund:<public_id>")
    injected: dict[str, set[str]] = field(default_factory=dict)
    payments: int = 0
    lines: int = 0

    def all_injected(self) -> set[tuple[str, str]]:
        return {(kind, identity) for kind, identities in self.injected.items() for identity in identities}


def _line_id() -> str:
    return "sl_" + secrets.token_hex(10)


def generate_day(
    *,
    day: date,
    merchants,
    requested_by,
    payments: int = 10_000,
    per_kind: int = 5,
    refund_share: float = 0.05,
    seed: int = 15,
    true_payouts: bool = False,
) -> GeneratedDay:
    """Write `payments` succeeded payments of `day` (some refunded) plus the records the
    injections need, and build the processor's report of that day with `per_kind`
    discrepancies of each kind. Payouts add up the lines as reported, or, with
    `true_payouts`, what the processor really moved (as the simulated processor service does:
    its payouts are computed before any lie)."""
    rng = random.Random(seed)
    start = datetime.combine(day, time.min, tzinfo=UTC)

    def moment() -> datetime:
        return start + timedelta(microseconds=rng.randrange(1_000_000, 86_398_000_000))

    special = per_kind * 2  # unknown + declined payments the processor says it captured
    new_payments = []
    for index in range(payments + special):
        currency = CURRENCIES[index % len(CURRENCIES)]
        amount = rng.randrange(100, 500_000) if currency != "JPY" else rng.randrange(100, 50_000)
        if index < payments:
            status = PaymentStatus.SUCCEEDED
        else:
            status = PaymentStatus.UNKNOWN if index < payments + per_kind else PaymentStatus.FAILED
        new_payments.append(
            Payment(
                merchant=merchants[index % len(merchants)],
                amount_minor=amount,
                currency=currency,
                status=status,
                payment_method="tok_success",
                idempotency_key=f"gen-{seed}-{index}",
            )
        )
    Payment.objects.bulk_create(new_payments, batch_size=2000)
    attempts, charge_refs = [], {}
    for payment in new_payments:
        outcome = {
            PaymentStatus.SUCCEEDED: AttemptOutcome.SUCCEEDED,
            PaymentStatus.UNKNOWN: AttemptOutcome.UNKNOWN,
            PaymentStatus.FAILED: AttemptOutcome.DECLINED,
        }[payment.status]
        reference = "ch_" + secrets.token_hex(10)
        charge_refs[payment.pk] = reference
        attempts.append(
            PaymentAttempt(
                payment=payment,
                number=1,
                idempotency_key=f"{payment.public_id}_a1",
                outcome=outcome,
                gateway_reference=reference if outcome == AttemptOutcome.SUCCEEDED else "",
                completed_at=moment(),
            )
        )
    PaymentAttempt.objects.bulk_create(attempts, batch_size=2000)
    succeeded = [a for a in attempts if a.outcome == AttemptOutcome.SUCCEEDED]
    refunded = rng.sample(succeeded, int(len(succeeded) * refund_share))
    refunds = []
    for attempt in refunded:
        refunds.append(
            Refund(
                payment=attempt.payment,
                amount_minor=max(1, attempt.payment.amount_minor // 2),
                reason="generated",
                status=RefundStatus.SUCCEEDED,
                requested_by=requested_by,
                gateway_reference="rf_" + secrets.token_hex(10),
                completed_at=attempt.completed_at + timedelta(microseconds=1),
            )
        )
    Refund.objects.bulk_create(refunds, batch_size=2000)

    injected: dict[str, set[str]] = {}

    def inject(kind: str, identity: str) -> None:
        injected.setdefault(kind, set()).add(identity)

    # Which records get which lie: disjoint samples, so each lie is the only one on its record.
    plain = [a for a in succeeded if a not in set(refunded)]
    rng.shuffle(plain)
    take = iter(plain)
    amount_lies = {next(take).pk for _ in range(per_kind)}
    currency_lies = {next(take).pk for _ in range(per_kind)}
    fee_lies = {next(take).pk for _ in range(per_kind)}
    left_out = {next(take).pk for _ in range(per_kind)}
    duplicated = {next(take).pk for _ in range(per_kind)}
    exact_copies = {next(take).pk for _ in range(per_kind)}
    refunds_left_out = {refund.pk for refund in refunds[:per_kind]}
    refund_amount_lies = {refund.pk for refund in refunds[per_kind : 2 * per_kind]}

    rows: list[list] = []

    def add(line_type, reference, key, charge_reference, amount, currency, occurred_at, line_id=None):
        line_id = line_id or _line_id()
        rows.append([line_id, line_type, reference, key, charge_reference, amount, currency, stamp(occurred_at)])
        return line_id

    for attempt in attempts:
        payment = attempt.payment
        if attempt.outcome != AttemptOutcome.SUCCEEDED and attempt.payment.status not in (
            PaymentStatus.UNKNOWN,
            PaymentStatus.FAILED,
        ):
            continue
        if attempt.pk in left_out:
            inject("missing_theirs", f"attempt:{attempt.idempotency_key}")
            continue
        reference = charge_refs[payment.pk]
        amount, currency = payment.amount_minor, payment.currency
        kind = None
        if attempt.pk in amount_lies:
            amount, kind = amount + 100, "amount_mismatch"
        elif attempt.pk in currency_lies:
            currency, kind = ("USD" if currency == "EUR" else "EUR"), "amount_mismatch"
        elif attempt.outcome != AttemptOutcome.SUCCEEDED:
            kind = "status_mismatch"
        line_id = add("charge", reference, attempt.idempotency_key, "", amount, currency, attempt.completed_at)
        if kind:
            inject(kind, f"line:{line_id}")
        fee = expected_fee(payment.amount_minor)
        if attempt.pk in fee_lies:
            fee_line = add(
                "fee", "fe_" + secrets.token_hex(10), "", reference, fee + 7, payment.currency, attempt.completed_at
            )
            inject("fee_mismatch", f"line:{fee_line}")
        elif fee > 0:
            add("fee", "fe_" + secrets.token_hex(10), "", reference, fee, payment.currency, attempt.completed_at)
        if attempt.pk in duplicated:
            copy = add("charge", reference, attempt.idempotency_key, "", amount, currency, attempt.completed_at)
            inject("duplicate", f"line:{copy}")
        if attempt.pk in exact_copies:
            rows.append(list(rows[-2] if fee > 0 else rows[-1]))
            # the same line id again: the second occurrence is the duplicate
            inject("duplicate", f"line:{rows[-1][0]}#2")
    for refund in refunds:
        if refund.pk in refunds_left_out:
            inject("missing_theirs", f"refund:{refund.public_id}")
            continue
        amount = refund.amount_minor + (1 if refund.pk in refund_amount_lies else 0)
        line_id = add(
            "refund",
            refund.gateway_reference,
            refund.public_id,
            charge_refs[refund.payment_id],
            amount,
            refund.payment.currency,
            refund.completed_at,
        )
        if refund.pk in refund_amount_lies:
            inject("amount_mismatch", f"line:{line_id}")
    # Charges the processor captured for payments we never made: a charge and its fee.
    for _ in range(per_kind):
        reference = "ch_" + secrets.token_hex(10)
        when = moment()
        line_id = add("charge", reference, "pay_unknown" + secrets.token_hex(8) + "_a1", "", 4200, "EUR", when)
        add("fee", "fe_" + secrets.token_hex(10), "", reference, expected_fee(4200), "EUR", when)
        inject("missing_ours", f"line:{line_id}")
    # Payouts: the day's net per currency, from the lines as reported or from what truly moved.
    net: dict[str, int] = {}
    if true_payouts:
        for attempt in succeeded:
            currency, amount = attempt.payment.currency, attempt.payment.amount_minor
            net[currency] = net.get(currency, 0) + amount - expected_fee(amount)
        for refund in refunds:
            net[refund.payment.currency] -= refund.amount_minor
    else:
        for row in rows:
            sign = 1 if row[1] == "charge" else -1
            net[row[6]] = net.get(row[6], 0) + sign * int(row[5])
    rows.sort(key=lambda row: row[7])
    for currency, amount in sorted(net.items()):
        add("payout", "po_" + secrets.token_hex(10), "", "", amount, currency, start + timedelta(hours=23, minutes=59))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    return GeneratedDay(
        day=day,
        csv_bytes=buffer.getvalue().encode(),
        injected=injected,
        payments=len(new_payments),
        lines=len(rows),
    )


def found_discrepancies(queryset) -> set[tuple[str, str]]:
    """The open exceptions, named the way `GeneratedDay.injected` names them."""
    found = set()
    for entry in queryset.select_related("line", "payment_attempt", "refund"):
        if entry.line is not None:
            suffix = f"#{entry.line.occurrence}" if entry.line.occurrence > 1 else ""
            found.add((entry.kind, f"line:{entry.line.line_id}{suffix}"))
        elif entry.payment_attempt is not None:
            found.add((entry.kind, f"attempt:{entry.payment_attempt.idempotency_key}"))
        else:
            found.add((entry.kind, f"refund:{entry.refund.public_id}"))
    return found
