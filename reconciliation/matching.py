"""Matching a processor day: set-based SQL over chunks of report lines, then our own records.

Every statement covers a whole chunk (one UPDATE classifies up to RECONCILIATION_CHUNK_LINES
lines, one INSERT ... ON CONFLICT opens or refreshes their exceptions), so the cost is a few
statements per chunk, never one query per line. Lines a person resolved, and lines already
matched, are not evaluated again: a re-run only looks at what is still open.
"""

from datetime import UTC, date, datetime, time, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from backoffice.progress import JobProgress, job_progress

# Expected processor fee of a charge amount (docs/settlement-report.md): basis points rounded
# half up to the minor unit, plus the fixed part. Amounts are positive, so integer division
# of (x + 5000) by 10000 rounds half up.
FEE_SQL = "((({amount}) * %(fee_bps)s + 5000) / 10000 + %(fee_fixed)s)"

CLASSIFY_SQL = f"""
WITH todo AS MATERIALIZED (
    SELECT l.*
      FROM reconciliation_settlementline l
     WHERE l.processor = %(processor)s AND l.day = %(day)s AND l.id BETWEEN %(low)s AND %(high)s
       AND l.line_type <> 'payout' AND l.outcome <> 'matched'
       AND NOT EXISTS (SELECT 1 FROM reconciliation_discrepancy d WHERE d.line_id = l.id AND d.status = 'resolved')
), keyed AS MATERIALIZED (
    SELECT t.id, t.line_type, t.amount_minor, t.currency, t.linked_by_hand,
           -- an earlier line of this processor for the same charge, refund or fee
           (EXISTS (SELECT 1 FROM reconciliation_settlementline e
                     WHERE e.processor = t.processor AND e.line_type = t.line_type
                       AND e.processor_reference = t.processor_reference AND e.id < t.id)
            OR (t.idempotency_key <> '' AND EXISTS (
                    SELECT 1 FROM reconciliation_settlementline e
                     WHERE e.processor = t.processor AND e.line_type = t.line_type
                       AND e.idempotency_key = t.idempotency_key AND e.id < t.id))
            OR (t.line_type = 'fee' AND EXISTS (
                    SELECT 1 FROM reconciliation_settlementline e
                     WHERE e.processor = t.processor AND e.line_type = 'fee'
                       AND e.charge_reference = t.charge_reference AND e.id < t.id))) AS duplicate,
           charge_line.amount_minor AS charge_line_amount, charge_line.currency AS charge_line_currency,
           CASE WHEN t.linked_by_hand THEN t.payment_attempt_id
                WHEN t.line_type = 'charge' THEN
                    (SELECT a.id FROM payments_paymentattempt a WHERE a.idempotency_key = t.idempotency_key)
                WHEN t.line_type = 'fee' THEN COALESCE(
                    (SELECT a.id FROM payments_paymentattempt a WHERE a.idempotency_key = charge_line.idempotency_key),
                    (SELECT a.id FROM payments_paymentattempt a
                      WHERE a.gateway_reference = t.charge_reference AND a.gateway_reference <> '' LIMIT 1))
           END AS attempt_id,
           CASE WHEN t.linked_by_hand THEN t.refund_id
                WHEN t.line_type = 'refund' THEN
                    (SELECT r.id FROM payments_refund r WHERE r.public_id = t.idempotency_key)
           END AS refund_id
      FROM todo t
      LEFT JOIN LATERAL (
            SELECT c.amount_minor, c.currency, c.idempotency_key FROM reconciliation_settlementline c
             WHERE t.line_type = 'fee' AND c.processor = t.processor AND c.line_type = 'charge'
               AND c.processor_reference = t.charge_reference
             ORDER BY c.id LIMIT 1) charge_line ON true
), judged AS (
    SELECT k.id, k.attempt_id, k.refund_id,
           CASE
             WHEN k.duplicate THEN 'duplicate'
             WHEN k.line_type = 'charge' THEN CASE
                 WHEN a.id IS NULL THEN 'missing_ours'
                 WHEN p.amount_minor <> k.amount_minor OR p.currency <> k.currency THEN 'amount_mismatch'
                 WHEN a.outcome <> 'succeeded' THEN 'status_mismatch'
                 ELSE 'matched' END
             WHEN k.line_type = 'refund' THEN CASE
                 WHEN r.id IS NULL THEN 'missing_ours'
                 WHEN r.amount_minor <> k.amount_minor OR rp.currency <> k.currency THEN 'amount_mismatch'
                 WHEN r.status <> 'succeeded' THEN 'status_mismatch'
                 ELSE 'matched' END
             ELSE CASE  -- fee
                 WHEN k.charge_line_amount IS NULL AND a.id IS NULL THEN 'missing_ours'
                 -- their charge line or our payment: a lie about the charge is the charge's
                 -- exception, not a second one on its fee
                 WHEN k.amount_minor IN ({FEE_SQL.format(amount="k.charge_line_amount")},
                                         {FEE_SQL.format(amount="p.amount_minor")})
                      AND k.currency IN (k.charge_line_currency, p.currency) THEN 'matched'
                 ELSE 'fee_mismatch' END
           END AS outcome,
           CASE WHEN k.line_type = 'charge' THEN p.amount_minor
                WHEN k.line_type = 'refund' THEN r.amount_minor
                ELSE {FEE_SQL.format(amount="COALESCE(p.amount_minor, k.charge_line_amount)")}
           END AS expected_amount,
           CASE
             WHEN k.duplicate THEN 'an earlier line already reported this ' || k.line_type
             WHEN k.line_type = 'charge' AND a.id IS NULL THEN 'no payment attempt with this idempotency key'
             WHEN k.line_type = 'refund' AND r.id IS NULL THEN 'no refund with this key'
             WHEN k.line_type = 'fee' AND k.charge_line_amount IS NULL AND a.id IS NULL THEN 'no charge for this fee'
             WHEN k.line_type = 'charge' THEN 'ours: ' || p.amount_minor || ' ' || p.currency || ', attempt '
                                              || a.outcome || ', payment ' || p.status
             WHEN k.line_type = 'refund' THEN 'ours: ' || r.amount_minor || ' ' || rp.currency
                                              || ', refund ' || r.status
             ELSE 'expected fee: ' || {FEE_SQL.format(amount="COALESCE(p.amount_minor, k.charge_line_amount)")}
           END AS note
      FROM keyed k
      LEFT JOIN payments_paymentattempt a ON a.id = k.attempt_id
      LEFT JOIN payments_payment p ON p.id = a.payment_id
      LEFT JOIN payments_refund r ON r.id = k.refund_id
      LEFT JOIN payments_payment rp ON rp.id = r.payment_id
)
UPDATE reconciliation_settlementline l
   SET outcome = j.outcome, payment_attempt_id = j.attempt_id, refund_id = j.refund_id,
       expected_amount_minor = j.expected_amount, note = left(j.note, 255), matched_at = %(now)s
  FROM judged j
 WHERE l.id = j.id
"""  # noqa: S608 (FEE_SQL is a constant)

# Payouts last, once every other line of the day has its class. A payout matches when it
# equals the day's net in its currency (charges - fees - refunds) either as their lines add up
# (with or without the lines found duplicate) or as our records say: our amount for every
# charge and refund of theirs we recognise, plus ours of the day their report lacks (a
# processor pays out what it really captured, whatever its report says line by line).
PAYOUTS_SQL = f"""
WITH net AS (
    SELECT currency,
           SUM(CASE line_type WHEN 'charge' THEN amount_minor ELSE -amount_minor END) AS all_lines,
           SUM(CASE WHEN outcome = 'duplicate' THEN 0
                    WHEN line_type = 'charge' THEN amount_minor ELSE -amount_minor END) AS without_duplicates
      FROM reconciliation_settlementline
     WHERE processor = %(processor)s AND day = %(day)s AND line_type <> 'payout'
     GROUP BY currency
), ours AS (
    SELECT p.currency, p.amount_minor - {FEE_SQL.format(amount="p.amount_minor")} AS net
      FROM payments_paymentattempt a JOIN payments_payment p ON p.id = a.payment_id
     WHERE a.id IN (SELECT payment_attempt_id FROM reconciliation_settlementline
                     WHERE processor = %(processor)s AND day = %(day)s AND line_type = 'charge'
                       AND outcome IN ('matched', 'amount_mismatch'))
    UNION ALL
    SELECT p.currency, p.amount_minor - {FEE_SQL.format(amount="p.amount_minor")} {{attempts_unreported}}
    UNION ALL
    SELECT p.currency, -r.amount_minor
      FROM payments_refund r JOIN payments_payment p ON p.id = r.payment_id
     WHERE r.id IN (SELECT refund_id FROM reconciliation_settlementline
                     WHERE processor = %(processor)s AND day = %(day)s AND line_type = 'refund'
                       AND outcome IN ('matched', 'amount_mismatch'))
    UNION ALL
    SELECT p.currency, -r.amount_minor {{refunds_unreported}}
), expected AS (
    SELECT currency, SUM(net) AS by_our_records FROM ours GROUP BY currency
), judged AS (
    SELECT t.id,
           CASE WHEN EXISTS (SELECT 1 FROM reconciliation_settlementline e
                              WHERE e.processor = t.processor AND e.line_type = 'payout'
                                AND e.processor_reference = t.processor_reference AND e.id < t.id)
                     THEN 'duplicate'
                WHEN t.amount_minor IN (n.all_lines, n.without_duplicates, x.by_our_records) THEN 'matched'
                ELSE 'amount_mismatch' END AS outcome,
           COALESCE(x.by_our_records, n.without_duplicates) AS expected_amount
      FROM reconciliation_settlementline t
      LEFT JOIN net n ON n.currency = t.currency
      LEFT JOIN expected x ON x.currency = t.currency
     WHERE t.processor = %(processor)s AND t.day = %(day)s AND t.line_type = 'payout' AND t.outcome <> 'matched'
       AND NOT EXISTS (SELECT 1 FROM reconciliation_discrepancy d WHERE d.line_id = t.id AND d.status = 'resolved')
)
UPDATE reconciliation_settlementline l
   SET outcome = j.outcome, expected_amount_minor = j.expected_amount, matched_at = %(now)s,
       note = CASE WHEN j.outcome = 'duplicate' THEN 'an earlier line already reported this payout'
                   ELSE 'expected net of the day: ' || COALESCE(j.expected_amount::text, 'none') END
  FROM judged j
 WHERE l.id = j.id
"""  # noqa: S608 (constants only)

# One queue entry per line that is not matched; a re-run refreshes open (and cleared) entries
# and never touches a resolved one.
OPEN_FOR_LINES_SQL = """
INSERT INTO reconciliation_discrepancy
    (kind, status, processor, day, line_id, payment_attempt_id, refund_id, merchant_id, amount_minor, currency,
     expected_amount_minor, detail, resolution, resolution_reason, created_at, updated_at)
SELECT l.outcome, 'open', l.processor, l.day, l.id, l.payment_attempt_id, l.refund_id,
       COALESCE(p.merchant_id, rp.merchant_id), l.amount_minor, l.currency, l.expected_amount_minor,
       l.note, '', '', %(now)s, %(now)s
  FROM reconciliation_settlementline l
  LEFT JOIN payments_paymentattempt a ON a.id = l.payment_attempt_id
  LEFT JOIN payments_payment p ON p.id = a.payment_id
  LEFT JOIN payments_refund r ON r.id = l.refund_id
  LEFT JOIN payments_payment rp ON rp.id = r.payment_id
 WHERE l.processor = %(processor)s AND l.day = %(day)s AND l.id BETWEEN %(low)s AND %(high)s
   AND l.outcome NOT IN ('', 'matched')
ON CONFLICT (line_id) WHERE line_id IS NOT NULL DO UPDATE
   SET kind = EXCLUDED.kind, status = 'open', payment_attempt_id = EXCLUDED.payment_attempt_id,
       refund_id = EXCLUDED.refund_id, merchant_id = EXCLUDED.merchant_id,
       expected_amount_minor = EXCLUDED.expected_amount_minor, detail = EXCLUDED.detail,
       resolved_at = NULL, updated_at = EXCLUDED.updated_at
 WHERE reconciliation_discrepancy.status <> 'resolved'
"""

CLEAR_FOR_LINES_SQL = """
UPDATE reconciliation_discrepancy d
   SET status = 'cleared', resolved_at = %(now)s, updated_at = %(now)s
  FROM reconciliation_settlementline l
 WHERE d.line_id = l.id AND d.status = 'open' AND l.outcome = 'matched'
   AND l.processor = %(processor)s AND l.day = %(day)s AND l.id BETWEEN %(low)s AND %(high)s
"""

# Our records of the day that no report line mentions (by key, or linked by hand).
ATTEMPTS_UNREPORTED = """
    FROM payments_paymentattempt a
    JOIN payments_payment p ON p.id = a.payment_id
   WHERE a.outcome = 'succeeded' AND a.completed_at >= %(start)s AND a.completed_at < %(end)s
     AND NOT EXISTS (SELECT 1 FROM reconciliation_settlementline l
                      WHERE l.processor = %(processor)s AND l.line_type = 'charge'
                        AND l.idempotency_key = a.idempotency_key)
     AND NOT EXISTS (SELECT 1 FROM reconciliation_settlementline l
                      WHERE l.linked_by_hand AND l.payment_attempt_id = a.id)
"""
REFUNDS_UNREPORTED = """
    FROM payments_refund r
    JOIN payments_payment p ON p.id = r.payment_id
   WHERE r.status = 'succeeded' AND r.completed_at >= %(start)s AND r.completed_at < %(end)s
     AND NOT EXISTS (SELECT 1 FROM reconciliation_settlementline l
                      WHERE l.processor = %(processor)s AND l.line_type = 'refund' AND l.idempotency_key = r.public_id)
     AND NOT EXISTS (SELECT 1 FROM reconciliation_settlementline l WHERE l.linked_by_hand AND l.refund_id = r.id)
"""
PAYOUTS_SQL = PAYOUTS_SQL.format(attempts_unreported=ATTEMPTS_UNREPORTED, refunds_unreported=REFUNDS_UNREPORTED)

OPEN_MISSING_SQL = """
INSERT INTO reconciliation_discrepancy
    (kind, status, processor, day, {column}, merchant_id, amount_minor, currency, detail, resolution,
     resolution_reason, created_at, updated_at)
SELECT 'missing_theirs', 'open', %(processor)s, %(day)s, {alias}.id, p.merchant_id, {amount}, p.currency,
       {detail}, '', '', %(now)s, %(now)s
{unreported}
ON CONFLICT ({column}) WHERE kind = 'missing_theirs' AND {column} IS NOT NULL DO UPDATE
   SET status = 'open', resolved_at = NULL, updated_at = EXCLUDED.updated_at
 WHERE reconciliation_discrepancy.status = 'cleared'
"""

# An open "missing in their report" entry whose record a later report did mention (the line
# came on the next processor day, or a person linked it) is cleared, whatever its day.
CLEAR_MISSING_SQL = """
UPDATE reconciliation_discrepancy d
   SET status = 'cleared', resolved_at = %(now)s, updated_at = %(now)s
 WHERE d.kind = 'missing_theirs' AND d.status = 'open' AND d.processor = %(processor)s AND (
       EXISTS (SELECT 1 FROM reconciliation_settlementline l JOIN payments_paymentattempt a
                 ON l.processor = d.processor AND l.line_type = 'charge' AND l.idempotency_key = a.idempotency_key
                WHERE a.id = d.payment_attempt_id)
    OR EXISTS (SELECT 1 FROM reconciliation_settlementline l
                WHERE l.linked_by_hand AND l.payment_attempt_id = d.payment_attempt_id)
    OR EXISTS (SELECT 1 FROM reconciliation_settlementline l JOIN payments_refund r
                 ON l.processor = d.processor AND l.line_type = 'refund' AND l.idempotency_key = r.public_id
                WHERE r.id = d.refund_id)
    OR EXISTS (SELECT 1 FROM reconciliation_settlementline l WHERE l.linked_by_hand AND l.refund_id = d.refund_id))
"""


CHUNK_STARTS_SQL = """
SELECT id FROM (
    SELECT id, row_number() OVER (ORDER BY id) AS position
      FROM reconciliation_settlementline WHERE processor = %(processor)s AND day = %(day)s
) numbered
 WHERE (position - 1) %% %(chunk)s = 0
 ORDER BY id
"""
LAST_ID_SQL = """
SELECT max(id), count(*) FROM reconciliation_settlementline WHERE processor = %(processor)s AND day = %(day)s
"""


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


def missing_is_overdue(day: date, now: datetime | None = None) -> bool:
    """Our records of `day` that their report lacks count as missing only after the delay:
    until then the line may still come (late report, next processor day)."""
    _, end = day_bounds(day)
    return (now or timezone.now()) >= end + timedelta(hours=settings.RECONCILIATION_MISSING_AFTER_HOURS)


def _params(processor: str, day: date, **extra) -> dict:
    start, end = day_bounds(day)
    return {
        "processor": processor,
        "day": day,
        "start": start,
        "end": end,
        "now": timezone.now(),
        "fee_bps": settings.PROCESSOR_FEE_BPS,
        "fee_fixed": settings.PROCESSOR_FEE_FIXED_MINOR,
        **extra,
    }


def match_day(*, processor: str, day: date) -> JobProgress:
    """Classify every line of the day and every record of ours of that day; open, refresh or
    clear the exceptions. Each chunk commits with its progress (the job's progress bar when
    run as a job): a retried job resumes after the last committed chunk, and running the day
    again changes nothing more."""
    chunk = max(1, settings.RECONCILIATION_CHUNK_LINES)
    with connection.cursor() as cursor:
        # Fresh statistics after a large ingestion, or the planner guesses an empty table.
        cursor.execute("ANALYZE reconciliation_settlementline")
        # Every chunk-th id of the day: each range [start_k, start_k+1) holds exactly `chunk` lines.
        cursor.execute(CHUNK_STARTS_SQL, {"processor": processor, "day": day, "chunk": chunk})
        starts = [row[0] for row in cursor.fetchall()]
        cursor.execute(LAST_ID_SQL, {"processor": processor, "day": day})
        last_id, total = cursor.fetchone()
    progress = job_progress(total=total)
    for index, low in enumerate(starts):
        lines_in_chunk = min(chunk, total - index * chunk)
        if (index + 1) * chunk <= progress.done:
            continue  # committed by an earlier attempt of this job
        high = starts[index + 1] - 1 if index + 1 < len(starts) else last_id
        with transaction.atomic(), connection.cursor() as cursor:
            params = _params(processor, day, low=low, high=high)
            # Compiling these statements costs more than running them on a chunk.
            cursor.execute("SET LOCAL jit = off")
            cursor.execute(CLASSIFY_SQL, params)
            cursor.execute(OPEN_FOR_LINES_SQL, params)
            cursor.execute(CLEAR_FOR_LINES_SQL, params)
            first = index * chunk
            progress.record(done=(f"line {first + n + 1}" for n in range(lines_in_chunk)))
    with transaction.atomic(), connection.cursor() as cursor:
        params = _params(processor, day, low=0, high=2**62)
        cursor.execute("SET LOCAL jit = off")
        cursor.execute(PAYOUTS_SQL, params)
        cursor.execute(OPEN_FOR_LINES_SQL, params)
        cursor.execute(CLEAR_FOR_LINES_SQL, params)
        if missing_is_overdue(day, params["now"]):
            cursor.execute(
                OPEN_MISSING_SQL.format(
                    column="payment_attempt_id",
                    alias="a",
                    amount="p.amount_minor",
                    detail="'charge ' || a.idempotency_key || ' is not in their report'",
                    unreported=ATTEMPTS_UNREPORTED,
                ),
                params,
            )
            cursor.execute(
                OPEN_MISSING_SQL.format(
                    column="refund_id",
                    alias="r",
                    amount="r.amount_minor",
                    detail="'refund ' || r.public_id || ' is not in their report'",
                    unreported=REFUNDS_UNREPORTED,
                ),
                params,
            )
        cursor.execute(CLEAR_MISSING_SQL, params)
    return progress
