"""Captures posted many at a time (ledger.services.capture_post_many, through the batched
payment path): the ledger ends exactly as one capture at a time would leave it, in a number of
statements that does not grow with the batch."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from backoffice.models import Job
from backoffice.runner import run_job
from ledger.models import Account, CapturedFunds, Entry, Price, Transaction
from ledger.services import capture_post_many
from payments.states import PaymentStatus
from tests.factories import MerchantFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.needs_postgres]

AMOUNTS = [1000, 2599, 7, 12345, 1]  # 1: a fee that takes it all (no net line, nothing to release)


def ledger_of(merchant) -> tuple:
    """What the merchant's captures left, without ids and times (a batch applies its answers in
    its own order); the kept balance after each entry is the running total in posting order."""
    transactions = Transaction.objects.filter(merchant=merchant).order_by("pk")
    posted = [
        (t.payment.amount_minor, t.memo.split(" of ")[0], e.account.kind, e.amount_minor, e.balance_after_minor)
        for t in transactions
        for e in Entry.objects.filter(transaction=t).select_related("account").order_by("pk")
    ]
    running = 0
    for _, _, kind, amount, balance_after in posted:
        if kind == "pending":
            running += amount
            assert balance_after == running
    entries = sorted(row[:4] for row in posted)
    funds = sorted(
        (*row[:5], row[5] is None)
        for row in CapturedFunds.objects.filter(merchant=merchant).values_list(
            "gross_minor", "fee_minor", "net_minor", "rate_bps", "fixed_minor", "released_in_id"
        )
    )
    balances = sorted(Account.objects.filter(merchant=merchant).values_list("kind", "balance_minor"))
    return entries, funds, balances


def process_all(merchant, batched: bool, settings) -> None:
    settings.JOBS_BATCH_ENABLED = batched
    jobs = Job.objects.filter(
        func="payments.jobs.process_payment",
        object_id__in=[str(pk) for pk in merchant.payments.values_list("pk", flat=True)],
    ).order_by("created_at")
    for job in jobs[:1] if batched else jobs:
        run_job(str(job.pk))
    assert set(merchant.payments.values_list("status", flat=True)) == {PaymentStatus.SUCCEEDED}


def test_a_batch_of_captures_posts_the_same_ledger_as_one_at_a_time(make_payment, settings):
    alone, batched = MerchantFactory(slug="alone"), MerchantFactory(slug="batched")
    for merchant in (alone, batched):
        Price.objects.create(merchant=merchant, currency="EUR", rate_bps=150, fixed_minor=5)
    for merchant in (alone, batched):
        for amount in AMOUNTS:
            make_payment(merchant=merchant, amount_minor=amount)

    process_all(alone, False, settings)
    process_all(batched, True, settings)

    assert ledger_of(batched) == ledger_of(alone)
    assert Transaction.objects.filter(merchant=batched).count() == len(AMOUNTS)


def test_capturing_many_costs_the_same_statements_for_3_or_30_payments_and_posts_each_once(make_payment):
    merchant = MerchantFactory(slug="many")
    payments = [make_payment(merchant=merchant, amount_minor=100 + n) for n in range(34)]

    def statements(chunk) -> int:
        with CaptureQueriesContext(connection) as queries:
            capture_post_many([(payment, "", None) for payment in chunk])
        return len(queries)

    capture_post_many([(payments[0], "", None)])  # accounts created on first use
    few, many = statements(payments[1:4]), statements(payments[4:34])
    assert few == many
    assert statements(payments[:34]) < few  # all posted already: nothing written
    assert Transaction.objects.filter(merchant=merchant).count() == 34
    assert CapturedFunds.objects.filter(merchant=merchant).count() == 34
