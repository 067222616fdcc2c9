"""The daily settlement report (docs/settlement-report.md), and the lies it can be told to tell.

With PROCESSOR_REPORT_LIES (e.g. "amount=2,missing=1") each day's report carries that many
discrepancies of each kind, and /v1/settlements/<day>/injected.json lists them, so a
reconciliation test can count what it found against what was planted. The lines chosen are
the day's earliest, so a closed day's report (and its list) is the same on every download.
Payouts are what the processor really paid: they are computed before any lie.
"""

import csv
import hashlib
import io
from collections import defaultdict
from dataclasses import dataclass

from processor.store import Operation, Store

COLUMNS = (
    "line_id",
    "type",
    "processor_reference",
    "idempotency_key",
    "charge_reference",
    "amount_minor",
    "currency",
    "occurred_at",
)
OTHER_CURRENCY = {"EUR": "USD", "USD": "EUR"}


@dataclass
class Line:
    line_id: str
    type: str
    processor_reference: str
    idempotency_key: str
    charge_reference: str
    amount_minor: int
    currency: str
    occurred_at: str

    def row(self) -> list:
        return [getattr(self, column) for column in COLUMNS]


def _stable_id(prefix: str, *parts: str) -> str:
    return prefix + hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def true_lines(operations: list[Operation], day: str) -> list[Line]:
    """Every movement of money that day, in time order: charges, their fees, refunds, then payouts."""
    lines: list[Line] = []
    net: dict[str, int] = defaultdict(int)
    for op in operations:
        if not op.approved:
            continue
        if op.kind == "charge":
            lines.append(
                Line(
                    op.line_id,
                    "charge",
                    op.reference,
                    op.idempotency_key,
                    "",
                    op.amount_minor,
                    op.currency,
                    op.occurred_at,
                )
            )
            net[op.currency] += op.amount_minor
            if op.fee_minor:
                lines.append(
                    Line(
                        op.fee_line_id,
                        "fee",
                        op.fee_reference,
                        "",
                        op.reference,
                        op.fee_minor,
                        op.currency,
                        op.occurred_at,
                    )
                )
                net[op.currency] -= op.fee_minor
        else:
            lines.append(
                Line(
                    op.line_id,
                    "refund",
                    op.reference,
                    op.idempotency_key,
                    op.charge_reference,
                    op.amount_minor,
                    op.currency,
                    op.occurred_at,
                )
            )
            net[op.currency] -= op.amount_minor
    for currency, amount in sorted(net.items()):
        if amount > 0:  # amounts are positive; a day that nets to nothing or less pays nothing out
            lines.append(
                Line(
                    _stable_id("sl_", "payout", day, currency),
                    "payout",
                    _stable_id("po_", "payout", day, currency),
                    "",
                    "",
                    amount,
                    currency,
                    f"{day}T23:59:59.999999Z",
                )
            )
    return lines


def report_lines(store: Store, day: str, lies: dict[str, int], seed: str) -> tuple[list[Line], list[dict]]:
    """The day's lines as served, and the list of what was planted in them."""
    operations = store.day(day)
    lines = true_lines(operations, day)
    injected: list[dict] = []
    charges = [line for line in lines if line.type == "charge"]
    fees = {line.charge_reference: line for line in lines if line.type == "fee"}
    unused = iter(charges)

    def planted(kind: str, line: Line, field: str = "", true=None, reported=None) -> None:
        injected.append(
            {
                "kind": kind,
                "line_id": line.line_id,
                "type": line.type,
                "processor_reference": line.processor_reference,
                "idempotency_key": line.idempotency_key,
                "field": field,
                "true_value": true,
                "reported_value": reported,
            }
        )

    for _ in range(lies.get("amount", 0)):
        line = next(unused, None)
        if line is None:
            break
        true, line.amount_minor = line.amount_minor, line.amount_minor + 100
        planted("amount", line, "amount_minor", true, line.amount_minor)
    for _ in range(lies.get("currency", 0)):
        line = next(unused, None)
        if line is None:
            break
        true_currency, line.currency = line.currency, OTHER_CURRENCY.get(line.currency, "EUR")
        planted("currency", line, "currency", true_currency, line.currency)
    for _ in range(lies.get("fee", 0)):
        line = next(unused, None)
        fee = fees.get(line.processor_reference) if line else None
        if fee is None:
            break
        true, fee.amount_minor = fee.amount_minor, fee.amount_minor + 7
        planted("fee", fee, "amount_minor", true, fee.amount_minor)
    for _ in range(lies.get("missing", 0)):
        line = next(unused, None)
        if line is None:
            break
        lines.remove(line)
        planted("missing", line)
    for _ in range(lies.get("duplicate", 0)):
        line = next(unused, None)
        if line is None:
            break
        lines.insert(lines.index(line) + 1, Line(**vars(line)))
        planted("duplicate", line)
    # A charge the processor declined (so Paydesk saw it fail) reported as captured.
    declined = (op for op in operations if op.kind == "charge" and not op.approved)
    for _ in range(lies.get("status", 0)):
        op = next(declined, None)
        if op is None:
            break
        line = Line(
            op.line_id, "charge", op.reference, op.idempotency_key, "", op.amount_minor, op.currency, op.occurred_at
        )
        lines.append(line)
        planted("status", line, "status", "declined", "captured")
    for index in range(lies.get("extra", 0)):
        tag = hashlib.sha256(f"{seed}|{day}|extra|{index}".encode()).hexdigest()[:16]
        line = Line(
            _stable_id("sl_", seed, day, "extra", str(index)),
            "charge",
            f"ch_{tag}",
            f"pay_unknown{tag}_a1",
            "",
            1000 + index,
            "EUR",
            f"{day}T12:00:00.{index:06d}Z",
        )
        lines.append(line)
        planted("extra", line)
    order = {kind: position for position, kind in enumerate(("charge", "fee", "refund", "payout"))}
    lines.sort(key=lambda line: (line.type == "payout", line.occurred_at, order[line.type]))
    return lines, injected


def render_csv(lines: list[Line]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(line.row() for line in lines)
    return out.getvalue()
