from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Sum
from django.utils import timezone

from ledger import services
from ledger.models import Account, CapturedFunds, Entry, MerchantTerms, Price, Transaction
from ledger.selectors import drift_check_run, merchant_balances
from ledger.states import AccountKind, Cause
from payments import services as payment_services
from payments.jobs import process_payment
from payments.models import new_request_key
from payments.states import RefundStatus
from tests.factories import MerchantFactory
from tests.ledger.conftest import balances, run_refund_jobs

pytestmark = pytest.mark.django_db
K = AccountKind


def entries_of(posted: Transaction) -> dict[str, int]:
    return {entry.account.kind: entry.amount_minor for entry in posted.entries.select_related("account")}


# --- fees -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "rate_bps", "fixed", "fee"),
    [
        (100_00, 140, 25, 165),  # 1.40 % of 100.00 = 1.40, + 0.25
        (1250, 140, 25, 43),  # 17.5 -> 18 (half up) + 25
        (50, 100, 0, 1),  # 0.5 -> 1: halves round up
        (49, 100, 0, 0),  # 0.49 -> 0
        (10, 140, 25, 10),  # never more than the amount
        (10**12, 9999, 10**6, 999_900_000_000 + 10**6),  # big amounts stay exact (no floats)
    ],
)
def test_fee_is_exact_in_minor_units_and_rounds_half_up(amount, rate_bps, fixed, fee):
    assert services.fee_compute(amount_minor=amount, rate_bps=rate_bps, fixed_minor=fixed) == fee


def test_a_merchants_price_wins_over_the_default_which_wins_over_the_setting(merchant, settings):
    Price.objects.update_or_create(merchant=None, currency="EUR", defaults={"rate_bps": 140, "fixed_minor": 25})
    assert services.price_for(merchant=merchant, currency="EUR") == (140, 25)
    Price.objects.create(merchant=merchant, currency="EUR", rate_bps=90, fixed_minor=10)
    assert services.price_for(merchant=merchant, currency="EUR") == (90, 10)
    assert services.price_for(merchant=MerchantFactory(), currency="EUR") == (140, 25)
    Price.objects.filter(currency="SEK").delete()
    settings.LEDGER_DEFAULT_FEE_RATE_BPS = 310
    assert services.price_for(merchant=merchant, currency="SEK") == (310, 0)


# --- captures -----------------------------------------------------------------------------------


def test_a_capture_posts_gross_fee_and_net_in_the_payments_transaction(captured, merchant):
    Price.objects.create(merchant=merchant, currency="EUR", rate_bps=200, fixed_minor=30)
    payment = captured(amount_minor=100_00)
    posted = Transaction.objects.get(payment=payment, cause=Cause.CAPTURE)
    assert entries_of(posted) == {K.PROCESSOR_RECEIVABLE: -100_00, K.PENDING: 97_70, K.FEE_REVENUE: 2_30}
    funds = CapturedFunds.objects.get(payment=payment)
    assert (funds.gross_minor, funds.fee_minor, funds.net_minor, funds.rate_bps, funds.fixed_minor) == (
        100_00,
        2_30,
        97_70,
        200,
        30,
    )
    assert balances(merchant) == {K.PENDING: 97_70, K.AVAILABLE: 0, K.RESERVED: 0, K.PAYOUTS_IN_TRANSIT: 0}
    assert posted.entries.get(account__kind=K.PENDING).balance_after_minor == 97_70


def test_a_capture_is_posted_once_however_often_it_is_announced(captured, merchant):
    payment = captured()
    first = Transaction.objects.get(payment=payment)
    again = services.capture_post(payment=payment)
    assert again == first and Entry.objects.count() == 3 and CapturedFunds.objects.count() == 1
    process_payment(payment.pk)  # a duplicate job run
    assert Transaction.objects.count() == 1


def test_a_capture_that_rolls_back_posts_nothing(make_payment):
    payment = make_payment()
    with pytest.raises(RuntimeError), transaction.atomic():
        attempt = payment_services.payment_processing_start(payment_id=payment.pk)
        from payments.gateways import ChargeResult, GatewayOutcome

        payment_services.payment_charge_result_apply(
            attempt_id=attempt.pk, result=ChargeResult(outcome=GatewayOutcome.SUCCEEDED, gateway_reference="ch_1")
        )
        assert Transaction.objects.count() == 1
        raise RuntimeError("the payment's transaction fails after the posting")
    assert Transaction.objects.count() == 0 and Entry.objects.count() == 0


def test_declined_and_unknown_payments_post_nothing(make_payment):
    for token in ("tok_decline", "tok_error"):
        process_payment(make_payment(payment_method=token).pk)
    assert not Transaction.objects.exists()


# --- refunds ------------------------------------------------------------------------------------


def test_a_refund_reserves_then_sends_and_the_fee_is_kept(captured, merchant, ledger_finance):
    payment = captured(amount_minor=100_00)
    funds = CapturedFunds.objects.get(payment=payment)
    refund = payment_services.refund_request(
        payment=payment,
        amount_minor=30_00,
        reason="r",
        requested_by=ledger_finance,
        request_key=new_request_key("test"),
    )[0]
    assert balances(merchant)[K.RESERVED] == 30_00 and balances(merchant)[K.AVAILABLE] == -30_00
    assert run_refund_jobs(refund).status == RefundStatus.SUCCEEDED
    assert balances(merchant) == {
        K.PENDING: funds.net_minor,
        K.AVAILABLE: -30_00,
        K.RESERVED: 0,
        K.PAYOUTS_IN_TRANSIT: 0,
    }
    sent = Transaction.objects.get(refund=refund, cause=Cause.REFUND)
    assert entries_of(sent) == {K.RESERVED: -30_00, K.PROCESSOR_RECEIVABLE: 30_00}
    fee_revenue = Entry.objects.filter(account__kind=K.FEE_REVENUE).aggregate(total=Sum("amount_minor"))["total"]
    assert fee_revenue == funds.fee_minor


def test_a_declined_refund_returns_its_reserve(captured, merchant, ledger_finance):
    payment = captured()
    refund = payment_services.refund_request(
        payment=payment,
        amount_minor=30_13,
        reason="r",
        requested_by=ledger_finance,
        request_key=new_request_key("test"),
    )[0]
    assert run_refund_jobs(refund).status == RefundStatus.FAILED
    assert balances(merchant)[K.AVAILABLE] == 0 and balances(merchant)[K.RESERVED] == 0
    assert list(Transaction.objects.filter(refund=refund).values_list("cause", flat=True).order_by("id")) == [
        Cause.REFUND_HOLD,
        Cause.REFUND_RELEASE,
    ]


def test_a_rejected_refund_returns_its_reserve(captured, merchant, ledger_finance, ledger_approver, settings):
    settings.PAYMENTS_REFUND_APPROVAL_THRESHOLD = {"default": "1"}
    refund = payment_services.refund_request(
        payment=captured(),
        amount_minor=50_00,
        reason="r",
        requested_by=ledger_finance,
        request_key=new_request_key("test"),
    )[0]
    assert balances(merchant)[K.RESERVED] == 50_00
    payment_services.refund_reject(refund=refund, approver=ledger_approver, note="no")
    assert balances(merchant)[K.RESERVED] == 0 and balances(merchant)[K.AVAILABLE] == 0


# --- pending -> available -----------------------------------------------------------------------


def test_funds_become_available_after_the_merchants_delay_once(captured, merchant):
    MerchantTerms.objects.create(merchant=merchant, release_delay_days=3)
    first, second = captured(amount_minor=10_00), captured(amount_minor=20_00)
    net = CapturedFunds.objects.aggregate(total=Sum("net_minor"))["total"]
    now = timezone.now()
    assert services.funds_release_due(now=now + timedelta(days=2, hours=23)) == 0
    assert services.funds_release_due(now=now + timedelta(days=3, minutes=1), batch_size=1) == 2
    assert balances(merchant)[K.PENDING] == 0 and balances(merchant)[K.AVAILABLE] == net
    assert services.funds_release_due(now=now + timedelta(days=30)) == 0
    assert Transaction.objects.filter(cause=Cause.RELEASE).count() == 2  # batch size 1: one per capture
    assert set(CapturedFunds.objects.values_list("payment", flat=True)) == {first.pk, second.pk}


# --- adjustments and corrections ----------------------------------------------------------------


def test_an_adjustment_is_idempotent_and_a_correction_names_what_it_corrects(merchant, ledger_finance):
    adjust = dict(merchant=merchant, currency="EUR", amount_minor=5_00, reason="goodwill", idempotency_key="adj-1")
    first = services.adjustment_post(**adjust, actor=ledger_finance)
    assert services.adjustment_post(**adjust, actor=ledger_finance) == first
    assert balances(merchant)[K.AVAILABLE] == 5_00
    correction = services.transaction_correct(
        corrected=first, reason="posted to the wrong merchant", actor=ledger_finance
    )
    assert correction.corrects == first and correction.cause == Cause.CORRECTION
    assert entries_of(correction) == {K.AVAILABLE: -5_00, K.ADJUSTMENTS: 5_00}
    assert balances(merchant)[K.AVAILABLE] == 0
    assert services.transaction_correct(corrected=first, reason="again", actor=ledger_finance) == correction


@pytest.mark.parametrize(
    ("lines_of", "message"),
    [
        (lambda a, p: [(a, 100), (p, -99)], "sum to zero"),
        (lambda a, p: [(a, 100)], "at least two"),
        (lambda a, p: [(a, 0), (p, 0)], "cannot be zero"),
        (lambda a, p: [(a, 1.5), (p, -1.5)], "whole numbers"),
    ],
)
def test_unbalanced_or_malformed_postings_are_refused_and_write_nothing(merchant, lines_of, message):
    available = services.merchant_accounts(merchant, "EUR")[K.AVAILABLE]
    adjustments = services.platform_accounts("EUR")[K.ADJUSTMENTS]
    with pytest.raises(ValidationError, match=message):
        services.transaction_post(
            cause=Cause.ADJUSTMENT, idempotency_key="bad", lines=lines_of(available, adjustments), memo="x"
        )
    assert not Transaction.objects.exists() and balances(merchant)[K.AVAILABLE] == 0


def test_amounts_in_two_currencies_must_balance_in_each(merchant):
    eur = services.merchant_accounts(merchant, "EUR")[K.AVAILABLE]
    jpy = services.platform_accounts("JPY")[K.ADJUSTMENTS]
    with pytest.raises(ValidationError, match="per currency"):
        services.transaction_post(cause=Cause.ADJUSTMENT, idempotency_key="fx", lines=[(eur, 100), (jpy, -100)])


# --- what PostgreSQL enforces -------------------------------------------------------------------


@pytest.mark.needs_postgres
@pytest.mark.parametrize("change", ["update", "delete", "queryset_update", "transaction_delete"])
def test_the_database_refuses_to_change_or_delete_entries(merchant, change):
    posted = services.adjustment_post(
        merchant=merchant, currency="EUR", amount_minor=1_00, reason="r", idempotency_key="k"
    )
    entry = posted.entries.first()
    amount = entry.amount_minor
    with pytest.raises(IntegrityError, match="immutable"), transaction.atomic():
        if change == "update":
            entry.amount_minor = 2_00
            entry.save()
        elif change == "delete":
            Entry.objects.filter(pk=entry.pk)._raw_delete(Entry.objects.db)
        elif change == "queryset_update":
            Entry.objects.update(amount_minor=F("amount_minor") * 2)
        else:
            with connection.cursor() as cursor:
                cursor.execute("DELETE FROM ledger_transaction WHERE id = %s", [posted.pk])
    assert Entry.objects.get(pk=entry.pk).amount_minor == amount


@pytest.mark.needs_postgres
def test_the_database_refuses_an_unbalanced_transaction_at_commit(merchant):
    available = services.merchant_accounts(merchant, "EUR")[K.AVAILABLE]
    with pytest.raises(IntegrityError, match="does not balance in EUR: off by 100"), transaction.atomic():
        posted = Transaction.objects.create(cause=Cause.ADJUSTMENT, idempotency_key="raw")
        Entry.objects.create(transaction=posted, account=available, amount_minor=100)
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # what COMMIT would do
    assert not Transaction.objects.filter(idempotency_key="raw").exists()


# --- balances and the drift check ---------------------------------------------------------------


def test_balances_read_the_kept_totals(captured, merchant, django_assert_num_queries):
    captured()
    with django_assert_num_queries(1):
        [eur] = merchant_balances(merchant)
    assert eur.pending == CapturedFunds.objects.get().net_minor


@pytest.mark.needs_postgres
def test_the_drift_check_is_clean_then_reports_a_tampered_balance(captured, merchant, capsys):
    captured()
    assert drift_check_run().is_clean
    Account.objects.filter(merchant=merchant, kind=K.PENDING).update(balance_minor=F("balance_minor") + 1)
    check = drift_check_run()
    assert not check.is_clean
    [drift] = check.drifted
    assert drift["kept"] == drift["summed"] + 1
    with pytest.raises(CommandError, match="ledger drift: 1 account"):
        call_command("ledger_drift_check")
