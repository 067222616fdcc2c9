"""How each processor's settlement report is laid out: the one place that knows column names.

Another processor's format is a new `ReportFormat` in `FORMATS`, not new code: ingestion reads
columns through the mapping, and everything after ingestion sees only our own field names.
"""

import re
from dataclasses import dataclass, field
from datetime import datetime

CHARGE, REFUND, FEE, PAYOUT = "charge", "refund", "fee", "payout"
LINE_TYPES = (CHARGE, REFUND, FEE, PAYOUT)


@dataclass(frozen=True)
class ReportFormat:
    """One processor's report: our field -> their column, their type word -> our line type."""

    name: str
    columns: dict[str, str]
    line_types: dict[str, str]
    # Which of our fields each line type must carry (beyond line id, type, amount, currency, time).
    required: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # The shape of a time, checked before fromisoformat (which alone would also take a bare
    # date or a local offset); strptime costs ten times more per line.
    timestamp_pattern: re.Pattern = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z")

    def parse_time(self, text: str) -> datetime:
        if self.timestamp_pattern.fullmatch(text):
            try:
                return datetime.fromisoformat(text)
            except ValueError:
                pass
        raise ValueError(f"{text[:40]!r} is not a UTC time like 2026-12-01T13:45:02.123456Z")


# Our field names, in the order ingestion stages them.
FIELDS = (
    "line_id",
    "line_type",
    "processor_reference",
    "idempotency_key",
    "charge_reference",
    "amount_minor",
    "currency",
    "occurred_at",
)

SIMULATED = ReportFormat(
    name="simulated",
    # docs/settlement-report.md
    columns={
        "line_id": "line_id",
        "line_type": "type",
        "processor_reference": "processor_reference",
        "idempotency_key": "idempotency_key",
        "charge_reference": "charge_reference",
        "amount_minor": "amount_minor",
        "currency": "currency",
        "occurred_at": "occurred_at",
    },
    line_types={"charge": CHARGE, "refund": REFUND, "fee": FEE, "payout": PAYOUT},
    required={
        CHARGE: ("processor_reference", "idempotency_key"),
        REFUND: ("processor_reference", "idempotency_key", "charge_reference"),
        FEE: ("processor_reference", "charge_reference"),
        PAYOUT: ("processor_reference",),
    },
)

FORMATS: dict[str, ReportFormat] = {SIMULATED.name: SIMULATED}


def report_format(name: str) -> ReportFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"No report format {name!r}; known: {', '.join(sorted(FORMATS))}.") from None
