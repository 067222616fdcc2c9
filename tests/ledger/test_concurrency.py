"""Refunds and payouts racing on one merchant, each thread on its own PostgreSQL connection."""

from datetime import date

import pytest

from ledger import services
from ledger.models import Entry, Payout
from ledger.states import AccountKind, Cause
from payments import services as payment_services
from payments.models import Refund, new_request_key
from tests.ledger.conftest import balances
from tests.payments.test_concurrency import race

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.needs_postgres]
K = AccountKind


def test_refunds_racing_a_payout_never_let_the_payout_overdraw(captured, merchant, ledger_finance, settings):
    settings.PAYMENTS_REFUND_APPROVAL_THRESHOLD = {"default": "100000"}
    payments = [captured(amount_minor=100_00) for _ in range(4)]
    services.funds_release_due(now=payments[-1].created_at.replace(year=2100))
    available = balances(merchant)[K.AVAILABLE]
    assert available > 0

    def act(i):
        if i == 0:
            return services.payouts_run_daily(day=date(2026, 12, 1))
        return payment_services.refund_request(
            payment=payments[i - 1],
            amount_minor=60_00,
            reason="race",
            requested_by=ledger_finance,
            request_key=new_request_key("test"),
        )[0]

    results = race(4, act)
    assert not [r for r in results if isinstance(r, Exception)], results
    [payout] = Payout.objects.all()
    refunds = Refund.objects.count() * 60_00
    # The stated rule: a payout takes what is available under the account's lock, never more;
    # refunds are never refused by the ledger and may take available below zero (shown as owed).
    assert payout.amount_minor <= available
    after = balances(merchant)
    assert after[K.AVAILABLE] == available - payout.amount_minor - refunds
    assert after[K.RESERVED] == refunds and after[K.PAYOUTS_IN_TRANSIT] == payout.amount_minor
    # Every posting saw the balance the previous one left (no lost update), and the payout's
    # entry never left the account negative.
    chain = list(
        Entry.objects.filter(account__merchant=merchant, account__kind=K.AVAILABLE)
        .order_by("id")
        .values_list("amount_minor", "balance_after_minor", "transaction__cause")
    )
    running = 0
    for amount, balance_after, cause in chain:
        running += amount
        assert balance_after == running
        if cause == Cause.PAYOUT:
            assert balance_after == 0  # it took exactly what was there, refunds before it included


def test_two_daily_runs_at_once_make_one_payout(merchant):
    services.adjustment_post(merchant=merchant, currency="EUR", amount_minor=90_00, reason="r", idempotency_key="a")
    results = race(4, lambda i: services.payouts_run_daily(day=date(2026, 12, 1)))
    assert not [r for r in results if isinstance(r, Exception)], results
    assert Payout.objects.count() == 1 and balances(merchant)[K.PAYOUTS_IN_TRANSIT] == 90_00


def test_the_same_adjustment_posted_at_once_posts_once(merchant):
    def post(_):
        return services.adjustment_post(
            merchant=merchant, currency="EUR", amount_minor=5_00, reason="r", idempotency_key="same"
        ).pk

    results = race(4, post)
    assert len(set(results)) == 1, results
    assert balances(merchant)[K.AVAILABLE] == 5_00
