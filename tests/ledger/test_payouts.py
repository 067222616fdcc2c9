from datetime import date, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from backoffice.models import Job, JobStatus
from backoffice.runner import run_job
from ledger import services
from ledger.models import MerchantTerms, Payout, Transaction
from ledger.states import AccountKind, Cause, PayoutOrigin, PayoutStatus
from tests.factories import MerchantFactory
from tests.ledger.conftest import balances

pytestmark = pytest.mark.django_db
K = AccountKind
DAY = date(2026, 12, 1)


@pytest.fixture
def funded(merchant):
    """The merchant with 500.00 EUR available (an adjustment stands in for released captures)."""
    services.adjustment_post(
        merchant=merchant, currency="EUR", amount_minor=500_00, reason="seed", idempotency_key="seed"
    )
    return merchant


def run_send_jobs():
    for job in Job.objects.filter(func=services.SEND_PAYOUT_JOB, status=JobStatus.PENDING):
        run_job(str(job.pk))


def test_the_daily_run_pays_out_everything_available_once_per_day(funded):
    [payout] = services.payouts_run_daily(day=DAY)
    assert (payout.amount_minor, payout.status, payout.origin) == (500_00, PayoutStatus.PENDING, PayoutOrigin.SCHEDULE)
    assert balances(funded)[K.AVAILABLE] == 0 and balances(funded)[K.PAYOUTS_IN_TRANSIT] == 500_00
    services.adjustment_post(merchant=funded, currency="EUR", amount_minor=7_00, reason="more", idempotency_key="more")
    assert services.payouts_run_daily(day=DAY) == [payout]  # the day's payout, not a second one
    assert Payout.objects.count() == 1 and balances(funded)[K.AVAILABLE] == 7_00
    run_send_jobs()
    run_send_jobs()  # a duplicate delivery sends nothing more
    payout.refresh_from_db()
    assert payout.status == PayoutStatus.IN_TRANSIT and payout.bank_reference
    assert [e.to_status for e in payout.events.all()] == [PayoutStatus.PENDING, PayoutStatus.IN_TRANSIT]
    [tomorrow] = services.payouts_run_daily(day=DAY + timedelta(days=1))
    assert tomorrow.amount_minor == 7_00


def test_merchants_with_nothing_available_paused_or_inactive_get_no_payout(funded):
    owed = MerchantFactory()
    services.adjustment_post(merchant=owed, currency="EUR", amount_minor=-3_00, reason="owes", idempotency_key="o")
    paused = MerchantFactory()
    MerchantTerms.objects.create(merchant=paused, payouts_paused=True)
    services.adjustment_post(merchant=paused, currency="EUR", amount_minor=3_00, reason="p", idempotency_key="p")
    assert [p.merchant for p in services.payouts_run_daily(day=DAY)] == [funded]


def test_paid_closes_the_payout_and_failed_returns_the_money(funded, ledger_finance):
    services.adjustment_post(merchant=funded, currency="USD", amount_minor=80_00, reason="usd", idempotency_key="usd")
    eur, usd = sorted(services.payouts_run_daily(day=DAY), key=lambda p: p.currency)
    run_send_jobs()
    services.payout_mark_paid(payout=eur, actor=ledger_finance, bank_reference="SEPA-1")
    services.payout_mark_failed(payout=usd, actor=ledger_finance, reason="account closed")
    assert balances(funded) == {K.PENDING: 0, K.AVAILABLE: 0, K.RESERVED: 0, K.PAYOUTS_IN_TRANSIT: 0}
    assert balances(funded, "USD")[K.AVAILABLE] == 80_00
    eur.refresh_from_db()
    assert (eur.status, eur.bank_reference) == (PayoutStatus.PAID, "SEPA-1")
    assert Transaction.objects.filter(payout=usd, cause=Cause.PAYOUT_FAILED).exists()
    with pytest.raises(ValidationError, match="not in transit"):
        services.payout_mark_paid(payout=usd, actor=ledger_finance)


def test_finance_pays_out_on_demand_and_a_large_payout_needs_a_second_person(
    funded, ledger_finance, ledger_approver, settings
):
    settings.LEDGER_PAYOUT_APPROVAL_THRESHOLD = {"EUR": "300"}
    request = dict(merchant=funded, currency="EUR", reason="merchant asked", requested_by=ledger_finance)
    small = services.payout_request(**request, amount_minor=100_00, idempotency_key="a")
    assert small.status == PayoutStatus.PENDING and balances(funded)[K.AVAILABLE] == 400_00
    assert services.payout_request(**request, amount_minor=100_00, idempotency_key="a") == small
    large = services.payout_request(**request, amount_minor=300_00, idempotency_key="b")
    assert large.status == PayoutStatus.REQUESTED and balances(funded)[K.AVAILABLE] == 400_00
    with pytest.raises(ValidationError, match="permission"):
        services.payout_approve(payout=large, approver=ledger_finance)
    services.payout_approve(payout=large, approver=ledger_approver, note="checked")
    large.refresh_from_db()
    assert large.status == PayoutStatus.PENDING and balances(funded)[K.AVAILABLE] == 100_00
    assert large.decided_by == ledger_approver


def test_an_approval_is_refused_when_the_balance_no_longer_covers_it(funded, ledger_finance, ledger_approver, settings):
    settings.LEDGER_PAYOUT_APPROVAL_THRESHOLD = {"EUR": "300"}
    large = services.payout_request(
        merchant=funded,
        currency="EUR",
        amount_minor=400_00,
        reason="r",
        requested_by=ledger_finance,
        idempotency_key="l",
    )
    services.adjustment_post(
        merchant=funded, currency="EUR", amount_minor=-200_00, reason="chargeback", idempotency_key="c"
    )
    with pytest.raises(ValidationError, match="more than the available balance"):
        services.payout_approve(payout=large, approver=ledger_approver)
    large.refresh_from_db()
    assert large.status == PayoutStatus.REQUESTED
    services.payout_reject(payout=large, approver=ledger_approver, note="too much now")
    large.refresh_from_db()
    assert large.status == PayoutStatus.REJECTED and balances(funded)[K.AVAILABLE] == 300_00


@pytest.mark.parametrize("amount", [0, -1, 500_01])
def test_on_demand_payouts_cannot_exceed_what_is_available(funded, ledger_finance, amount):
    with pytest.raises(ValidationError):
        services.payout_request(
            merchant=funded,
            currency="EUR",
            amount_minor=amount,
            reason="r",
            requested_by=ledger_finance,
            idempotency_key="x",
        )
    assert not Payout.objects.exists() and balances(funded)[K.AVAILABLE] == 500_00


def test_the_database_refuses_a_payout_decided_by_its_requester(funded, ledger_finance, settings):
    settings.LEDGER_PAYOUT_APPROVAL_THRESHOLD = {"EUR": "1"}
    payout = services.payout_request(
        merchant=funded, currency="EUR", amount_minor=None, reason="r", requested_by=ledger_finance, idempotency_key="s"
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        Payout.objects.filter(pk=payout.pk).update(decided_by=ledger_finance)


def test_viewers_and_operators_cannot_ask_for_payouts(funded, operator):
    with pytest.raises(ValidationError, match="permission"):
        services.payout_request(
            merchant=funded, currency="EUR", amount_minor=None, reason="r", requested_by=operator, idempotency_key="z"
        )


def test_the_release_job_and_daily_payout_job_bodies(captured, merchant):
    from ledger.jobs import release_due_funds, run_daily_payouts

    MerchantTerms.objects.create(merchant=merchant, release_delay_days=0)
    captured()
    assert release_due_funds() == {"released": 1} and release_due_funds() == {"released": 0}
    assert run_daily_payouts() == {"payouts": 1} and run_daily_payouts() == {"payouts": 0}
    assert timezone.localdate() == Payout.objects.get().created_at.date()
