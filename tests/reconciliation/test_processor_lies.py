"""End to end against the real processor service told to lie: a day of payments charged over
HTTP, its report fetched by the scheduled path (the cron's fetch job, then the matching job it
queues), and every planted discrepancy found with its class, nothing else flagged."""

import asyncio
import random
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from backoffice.models import Job
from backoffice.runner import run_job
from payments.gateways import ChargeRequest, GatewayOutcome, RefundRequest
from payments.gateways.http import AsyncProcessorClient, HttpGateway
from payments.models import Payment, PaymentAttempt, Refund
from payments.states import AttemptOutcome, PaymentStatus, RefundStatus
from reconciliation.cron import FETCH_JOB, fetch_reports_periodic
from reconciliation.models import Discrepancy, SettlementFile
from tests.factories import MerchantFactory
from tests.helpers import run_coroutine
from tests.reconciliation.daygen import found_discrepancies

pytestmark = pytest.mark.needs_postgres

PAYMENTS = 10_000
DECLINED_EVERY = 97  # about 1% declined: the "status" lie needs declined charges
REFUNDS = 60
LIES = {"amount": 4, "currency": 3, "status": 3, "fee": 4, "missing": 3, "duplicate": 3, "extra": 3}
# The processor's lie -> the class reconciliation must give it.
CLASS_OF = {
    "amount": "amount_mismatch",
    "currency": "amount_mismatch",
    "status": "status_mismatch",
    "fee": "fee_mismatch",
    "missing": "missing_theirs",
    "duplicate": "duplicate",
    "extra": "missing_ours",
}


def _charge_all(payments: list[Payment]) -> list:
    async def run():
        async with AsyncProcessorClient(max_connections=8) as client:
            results = []
            for start in range(0, len(payments), 500):
                batch = payments[start : start + 500]
                results += await asyncio.gather(
                    *(
                        client.charge(
                            ChargeRequest(
                                idempotency_key=f"{payment.public_id}_a1",
                                amount_minor=payment.amount_minor,
                                currency=payment.currency,
                                payment_method=payment.payment_method,
                                reference=payment.public_id,
                            )
                        )
                        for payment in batch
                    )
                )
            return results

    return run_coroutine(run())


def _our_day(merchant, finance, day) -> None:
    """Payments charged at the processor over HTTP, and our records of them on `day`."""
    rng = random.Random(15)
    payments = Payment.objects.bulk_create(
        [
            Payment(
                merchant=merchant,
                amount_minor=rng.randrange(100, 500_000),
                currency=("EUR", "USD", "GBP")[index % 3],
                status=PaymentStatus.SUCCEEDED,
                payment_method="tok_decline" if index % DECLINED_EVERY == 5 else "tok_success",
                idempotency_key=f"lies-{index}",
            )
            for index in range(PAYMENTS)
        ],
        batch_size=2000,
    )
    results = _charge_all(payments)
    at = datetime.combine(day, datetime.now(UTC).time(), tzinfo=UTC)
    attempts, declined = [], []
    for payment, result in zip(payments, results, strict=True):
        assert result.outcome in (GatewayOutcome.SUCCEEDED, GatewayOutcome.DECLINED), result
        succeeded = result.outcome == GatewayOutcome.SUCCEEDED
        if not succeeded:
            declined.append(payment.pk)
        attempts.append(
            PaymentAttempt(
                payment=payment,
                number=1,
                idempotency_key=f"{payment.public_id}_a1",
                outcome=AttemptOutcome.SUCCEEDED if succeeded else AttemptOutcome.DECLINED,
                gateway_reference=result.gateway_reference,
                completed_at=at,
            )
        )
    Payment.objects.filter(pk__in=declined).update(status=PaymentStatus.FAILED)
    PaymentAttempt.objects.bulk_create(attempts, batch_size=2000)
    gateway = HttpGateway()
    refunded = [attempt for attempt in attempts if attempt.outcome == AttemptOutcome.SUCCEEDED][-REFUNDS:]
    refunds = Refund.objects.bulk_create(
        [
            Refund(
                payment=attempt.payment,
                amount_minor=attempt.payment.amount_minor // 2,
                reason="customer asked",
                status=RefundStatus.SUCCEEDED,
                requested_by=finance,
                completed_at=at + timedelta(microseconds=1),
            )
            for attempt in refunded
        ]
    )
    for refund, attempt in zip(refunds, refunded, strict=True):
        result = gateway.refund(
            RefundRequest(
                idempotency_key=refund.public_id,
                charge_reference=attempt.gateway_reference,
                amount_minor=refund.amount_minor,
                currency=attempt.payment.currency,
            )
        )
        assert result.outcome == GatewayOutcome.SUCCEEDED, result
        refund.gateway_reference = result.gateway_reference
    Refund.objects.bulk_update(refunds, ["gateway_reference"])


def _move_processor_day(processor, day) -> None:
    """The processor recorded everything today; its records (and so its report) go to `day`,
    a finished day old enough for what their report lacks to be flagged."""
    processor.stop()
    with sqlite3.connect(processor.db_path) as store:
        store.execute("UPDATE operations SET day = ?, occurred_at = ? || substr(occurred_at, 11)", (str(day), str(day)))
    processor.start()


def _run_waiting_jobs(func: str) -> None:
    for job in Job.objects.filter(func=func).order_by("created_at"):
        run_job(str(job.pk))  # what a worker runs


def _expected(injected: list[dict]) -> set[tuple[str, str]]:
    expected = set()
    for lie in injected:
        kind = CLASS_OF[lie["kind"]]
        if kind == "missing_theirs":
            expected.add((kind, f"attempt:{lie['idempotency_key']}"))
        elif kind == "duplicate":
            expected.add((kind, f"line:{lie['line_id']}#2"))  # the repeated line is the duplicate
        else:
            expected.add((kind, f"line:{lie['line_id']}"))
    return expected


def test_every_lie_of_the_processor_is_found_with_its_class_and_nothing_else(start_processor, settings, finance):
    processor = start_processor(
        read_timeout=60,  # honest answers on a busy machine: a timeout here would be our own "unknown"
        PROCESSOR_REPORT_LIES=",".join(f"{kind}={count}" for kind, count in LIES.items()),
        PROCESSOR_FEE_BPS=settings.PROCESSOR_FEE_BPS,
        PROCESSOR_FEE_FIXED_MINOR=settings.PROCESSOR_FEE_FIXED_MINOR,
    )
    settings.PAYMENTS_PROCESSOR_CONNECT_TIMEOUT_SECONDS = 30.0  # as above, for connecting
    settings.RECONCILIATION_FETCH_DAYS = 3
    settings.RECONCILIATION_MISSING_AFTER_HOURS = 48
    day = timezone.now().date() - timedelta(days=3)
    _our_day(MerchantFactory(slug="lies"), finance, day)
    _move_processor_day(processor, day)

    fetch_reports_periodic()  # the cron's tick
    _run_waiting_jobs(FETCH_JOB)
    _run_waiting_jobs("reconciliation.jobs.match_processor_day")

    injected = processor.get_json(f"/v1/settlements/{day}/injected.json")["injected"]
    assert {kind: sum(lie["kind"] == kind for lie in injected) for kind in LIES} == LIES  # all planted
    settlement_file = SettlementFile.objects.get(day=day)
    assert settlement_file.source == "fetch" and settlement_file.line_count > 2 * PAYMENTS * 0.95
    # The cron fetched the two later days too: empty days, but the processor plants its extra
    # charges (for payments nobody made) in every day's report.
    later = [day + timedelta(days=n) for n in (1, 2)]
    assert SettlementFile.objects.filter(day__in=later, source="fetch").count() == 2
    for other in later:
        injected += processor.get_json(f"/v1/settlements/{other}/injected.json")["injected"]
    found = found_discrepancies(Discrepancy.objects.filter(status="open"))
    expected = _expected(injected)
    assert found - expected == set(), "flagged without a lie (precision)"
    assert expected - found == set(), "a lie not found (recall)"
    assert not Job.objects.filter(func__startswith="reconciliation.").exclude(status="succeeded").exists()
