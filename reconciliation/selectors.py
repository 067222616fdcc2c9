"""Reads shared by the admin pages and the CSV: the daily report of a processor day."""

from dataclasses import dataclass, field
from datetime import date, datetime

from django.db import connection
from django.db.models import Count, Sum

from reconciliation.matching import ATTEMPTS_UNREPORTED, REFUNDS_UNREPORTED, day_bounds, missing_is_overdue
from reconciliation.models import Discrepancy, DiscrepancyKind, LineOutcome, MatchingRun, SettlementFile, SettlementLine

OURS_SQL = """
SELECT 'charge', p.currency, count(*), COALESCE(sum(p.amount_minor), 0)
  FROM payments_paymentattempt a JOIN payments_payment p ON p.id = a.payment_id
 WHERE a.outcome = 'succeeded' AND a.completed_at >= %(start)s AND a.completed_at < %(end)s
 GROUP BY p.currency
UNION ALL
SELECT 'refund', p.currency, count(*), COALESCE(sum(r.amount_minor), 0)
  FROM payments_refund r JOIN payments_payment p ON p.id = r.payment_id
 WHERE r.status = 'succeeded' AND r.completed_at >= %(start)s AND r.completed_at < %(end)s
 GROUP BY p.currency
"""
UNREPORTED_SQL = f"""
SELECT 'charge', p.currency, count(*), COALESCE(sum(p.amount_minor), 0) {ATTEMPTS_UNREPORTED} GROUP BY p.currency
UNION ALL
SELECT 'refund', p.currency, count(*), COALESCE(sum(r.amount_minor), 0) {REFUNDS_UNREPORTED} GROUP BY p.currency
"""


@dataclass(frozen=True)
class ReportRow:
    section: str  # "their lines", "our records", "exceptions"
    category: str  # a line outcome, "recorded" / "not in their report", or "<kind> (<status>)"
    line_type: str
    currency: str
    count: int
    amount_minor: int


@dataclass
class DayReport:
    processor: str
    day: date
    files: list = field(default_factory=list)
    rows: list[ReportRow] = field(default_factory=list)
    open_count: int = 0
    missing_overdue: bool = False
    last_run: MatchingRun | None = None

    def section(self, name: str) -> list[ReportRow]:
        return [row for row in self.rows if row.section == name]


def day_report(*, processor: str, day: date) -> DayReport:
    report = DayReport(processor=processor, day=day, missing_overdue=missing_is_overdue(day))
    report.files = list(SettlementFile.objects.filter(processor=processor, day=day).order_by("ingested_at"))
    report.last_run = (
        MatchingRun.objects.filter(processor=processor, day=day).select_related("job").order_by("-created_at").first()
    )
    outcomes = dict(LineOutcome.choices)
    lines = (
        SettlementLine.objects.filter(processor=processor, day=day)
        .values("outcome", "line_type", "currency")
        .annotate(count=Count("id"), amount=Sum("amount_minor"))
        .order_by("outcome", "line_type", "currency")
    )
    for row in lines:
        report.rows.append(
            ReportRow(
                "their lines", outcomes.get(row["outcome"], row["outcome"]), row["line_type"], row["currency"],
                row["count"], row["amount"] or 0,
            )
        )  # fmt: skip
    start, end = day_bounds(day)
    params: dict[str, str | datetime] = {"processor": processor, "start": start, "end": end}
    with connection.cursor() as cursor:
        cursor.execute(OURS_SQL, params)
        for line_type, currency, count, amount in cursor.fetchall():
            report.rows.append(ReportRow("our records", "recorded", line_type, currency, count, amount))
        cursor.execute(UNREPORTED_SQL, params)
        label = "not in their report (flagged)" if report.missing_overdue else "not in their report yet (waiting)"
        for line_type, currency, count, amount in cursor.fetchall():
            report.rows.append(ReportRow("our records", label, line_type, currency, count, amount))
    entries = (
        Discrepancy.objects.filter(processor=processor, day=day)
        .values("kind", "status", "currency")
        .annotate(count=Count("id"), amount=Sum("amount_minor"))
        .order_by("kind", "status", "currency")
    )
    kinds = dict(DiscrepancyKind.choices)
    for row in entries:
        report.rows.append(
            ReportRow("exceptions", f"{kinds.get(row['kind'], row['kind'])} ({row['status']})", "", row["currency"],
                      row["count"], row["amount"] or 0)
        )  # fmt: skip
        if row["status"] == "open":
            report.open_count += row["count"]
    return report


def processor_days(*, processor: str, limit: int = 60) -> list[dict]:
    """The latest processor days with a report, newest first, with their open exceptions."""
    days = list(
        SettlementFile.objects.filter(processor=processor)
        .values("day")
        .annotate(files=Count("id"), line_total=Sum("line_count"))
        .order_by("-day")[:limit]
    )
    open_by_day = dict(
        Discrepancy.objects.filter(processor=processor, status="open", day__in=[d["day"] for d in days])
        .values("day")
        .annotate(count=Count("id"))
        .values_list("day", "count")
    )
    for entry in days:
        entry["open"] = open_by_day.get(entry["day"], 0)
    return days
