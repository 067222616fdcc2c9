"""Random sequences of captures, manual settlements, refunds (partial, left in flight, declined),
releases, payouts (paid, failed), adjustments and replayed signals, with the ledger's invariants
checked after every step."""

from datetime import date, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Count, Sum
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from ledger import receivers, services
from ledger.models import Account, Entry, Payout, Transaction
from ledger.roles import ensure_ledger_roles
from ledger.selectors import DRIFT_SQL, UNBALANCED_SQL
from ledger.states import AccountKind, Cause, PayoutStatus
from payments import services as payment_services
from payments.jobs import process_payment
from payments.models import Payment, Refund, new_request_key
from payments.states import CAPTURED, PaymentStatus, RefundStatus
from tests.factories import MerchantFactory, UserFactory
from tests.ledger.conftest import run_refund_jobs

CURRENCIES = st.sampled_from(["EUR", "JPY"])


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        # Each example runs in a savepoint rolled back at teardown: examples (and the replays
        # of a shrinking failure) start from the same database.
        self._example = transaction.atomic()
        self._example.__enter__()
        self.merchants = [MerchantFactory(), MerchantFactory()]
        self.finance = UserFactory(username="prop-finance", roles=["Finance"])
        self.approver = UserFactory(username="prop-approver", roles=["Approvers", "Operators"])
        ensure_ledger_roles()
        self.payment_ids: list[int] = []
        self.refund_ids: list[int] = []
        self.payout_ids: list[int] = []
        self.keys = 0
        self.day = date(2026, 12, 1)
        self.now = timezone.now()

    def _key(self) -> str:
        self.keys += 1
        return f"prop-{id(self):x}-k{self.keys}"  # hex: no long digit run (card-number check)

    def _payment(self, merchant_index: int, currency: str, amount: int, token: str) -> Payment:
        payment = payment_services.payment_create(
            merchant=self.merchants[merchant_index % 2],
            amount_minor=amount,
            currency=currency,
            payment_method=token,
            idempotency_key=self._key(),
        )[0]
        process_payment(payment.pk)
        payment.refresh_from_db()
        self.payment_ids.append(payment.pk)
        return payment

    @rule(merchant=st.integers(0, 1), currency=CURRENCIES, amount=st.integers(1, 10**7))
    def capture(self, merchant, currency, amount):
        self._payment(merchant, currency, amount, "tok_success")

    @rule(merchant=st.integers(0, 1), currency=CURRENCIES, amount=st.integers(1, 10**6), succeeded=st.booleans())
    def settle_by_hand(self, merchant, currency, amount, succeeded):
        payment = self._payment(merchant, currency, amount, "tok_error")
        assert payment.status == PaymentStatus.UNKNOWN
        settlement = payment_services.settlement_request(
            payment=payment,
            settle_as=PaymentStatus.SUCCEEDED if succeeded else PaymentStatus.FAILED,
            reason="seen on the processor's dashboard",
            gateway_reference="ch_by_hand" if succeeded else "",
            requested_by=UserFactory(username="prop-operator", roles=["Operators"]),
            request_key=new_request_key("test"),
        )[0]
        payment_services.settlement_approve(settlement=settlement, approver=self.approver)

    @precondition(lambda self: self.payment_ids)
    @rule(index=st.integers(0, 10**6), share=st.floats(0.01, 1.0), declined=st.booleans(), run=st.booleans())
    def refund(self, index, share, declined, run):
        payment = Payment.objects.get(pk=self.payment_ids[index % len(self.payment_ids)])
        amount = max(1, int(payment.amount_minor * share))
        if declined:  # the simulated gateway declines refunds whose amount ends in 13
            amount = amount - amount % 100 + 13 if amount >= 113 else amount
        try:
            refund = payment_services.refund_request(
                payment=payment,
                amount_minor=amount,
                reason="customer asked",
                requested_by=self.finance,
                request_key=new_request_key("test"),
            )[0]
        except ValidationError:
            return
        self.refund_ids.append(refund.pk)
        if run:
            run_refund_jobs(refund)

    @precondition(lambda self: self.refund_ids)
    @rule()
    def run_refunds_in_flight(self):
        for refund in Refund.objects.filter(pk__in=self.refund_ids, status=RefundStatus.APPROVED):
            run_refund_jobs(refund)

    @precondition(lambda self: self.refund_ids)
    @rule(index=st.integers(0, 10**6))
    def reject_a_refund(self, index):
        refund = Refund.objects.get(pk=self.refund_ids[index % len(self.refund_ids)])
        if refund.status == RefundStatus.REQUESTED:
            payment_services.refund_reject(refund=refund, approver=self.approver, note="no")

    @rule(days=st.integers(0, 3))
    def release(self, days):
        self.now += timedelta(days=days)
        services.funds_release_due(now=self.now, batch_size=3)

    @rule()
    def daily_payouts(self):
        self.day += timedelta(days=1)
        self.payout_ids += [payout.pk for payout in services.payouts_run_daily(day=self.day)]
        self.payout_ids += [payout.pk for payout in services.payouts_run_daily(day=self.day)]  # a second cron run

    @precondition(lambda self: self.payout_ids)
    @rule(index=st.integers(0, 10**6), paid=st.booleans())
    def settle_payout(self, index, paid):
        payout = Payout.objects.get(pk=self.payout_ids[index % len(self.payout_ids)])
        services.payout_send(payout_id=payout.pk)
        payout.refresh_from_db()
        if payout.status != PayoutStatus.IN_TRANSIT:
            return
        if paid:
            services.payout_mark_paid(payout=payout, actor=self.finance)
        else:
            services.payout_mark_failed(payout=payout, actor=self.finance, reason="bank returned it")

    @rule(merchant=st.integers(0, 1), currency=CURRENCIES, amount=st.integers(-(10**5), 10**5).filter(bool))
    def adjust(self, merchant, currency, amount):
        services.adjustment_post(
            merchant=self.merchants[merchant],
            currency=currency,
            amount_minor=amount,
            reason="reconciliation difference",
            idempotency_key=self._key(),
        )

    @precondition(lambda self: self.payment_ids)
    @rule(index=st.integers(0, 10**6))
    def replay_signals(self, index):
        """A receiver called again (a re-sent signal, a duplicate job) posts nothing."""
        payment = Payment.objects.get(pk=self.payment_ids[index % len(self.payment_ids)])
        event = payment.events.last()
        receivers.payment_status_changed_post(
            Payment, payment=payment, event=event, from_status=event.from_status, to_status=PaymentStatus.SUCCEEDED
        ) if payment.status in CAPTURED else None
        for refund in payment.refunds.all():
            last = refund.events.last()
            receivers.refund_status_changed_post(
                Refund, refund=refund, event=last, from_status=last.from_status, to_status=last.to_status
            )

    def teardown(self):
        transaction.set_rollback(True)
        self._example.__exit__(None, None, None)

    @invariant()
    def every_transaction_balances_per_currency(self):
        with connection.cursor() as cursor:
            cursor.execute(UNBALANCED_SQL)
            assert cursor.fetchall() == []

    @invariant()
    def kept_balances_equal_the_sum_of_entries(self):
        with connection.cursor() as cursor:
            cursor.execute(DRIFT_SQL)
            assert cursor.fetchall() == []

    @invariant()
    def money_is_neither_created_nor_lost(self):
        per_currency = Entry.objects.values("account__currency").annotate(total=Sum("amount_minor"))
        assert all(row["total"] == 0 for row in per_currency), list(per_currency)

    @invariant()
    def nothing_is_posted_twice(self):
        captured = Payment.objects.filter(pk__in=self.payment_ids, status__in=CAPTURED).count()
        mine = Transaction.objects.filter(merchant__in=self.merchants)
        assert mine.filter(cause=Cause.CAPTURE).count() == captured
        succeeded = Refund.objects.filter(pk__in=self.refund_ids, status=RefundStatus.SUCCEEDED).count()
        assert mine.filter(cause=Cause.REFUND).count() == succeeded
        per_refund = mine.filter(refund__isnull=False).values("refund", "cause").annotate(n=Count("id"))
        assert all(row["n"] == 1 for row in per_refund)
        not_requested = (
            Payout.objects.filter(merchant__in=self.merchants)
            .exclude(status__in=[PayoutStatus.REQUESTED, PayoutStatus.REJECTED])
            .count()
        )
        assert mine.filter(cause=Cause.PAYOUT).count() == not_requested

    @invariant()
    def payouts_never_take_available_below_zero(self):
        payout_entries = Entry.objects.filter(
            transaction__cause=Cause.PAYOUT, account__kind=AccountKind.AVAILABLE, balance_after_minor__lt=0
        )
        assert not payout_entries.exists()

    @invariant()
    def reserves_match_refunds_in_flight(self):
        in_flight = Refund.objects.filter(
            pk__in=self.refund_ids, status__in=[RefundStatus.REQUESTED, RefundStatus.APPROVED, RefundStatus.PROCESSING]
        )
        for currency in ("EUR", "JPY"):
            reserved = Account.objects.filter(
                merchant__in=self.merchants, kind=AccountKind.RESERVED, currency=currency
            ).aggregate(total=Sum("balance_minor"))["total"]
            expected = in_flight.filter(payment__currency=currency).aggregate(total=Sum("amount_minor"))["total"]
            assert (reserved or 0) == (expected or 0)


@pytest.mark.django_db
def test_random_money_movements_keep_the_ledger_invariants():
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=15,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
