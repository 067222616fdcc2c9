"""Random sequences of create / process / retry / cancel / recover / refund / approve /
reject / duplicate runs, with the invariants a payments team relies on checked after every
step: allowed transitions only, one charge per payment, refunds never beyond the capture,
and no refund decided by the person who asked for it."""

import pytest
from django.core.exceptions import ValidationError
from django.db.models import F, Q, Sum
from django.test import override_settings
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from backoffice.models import Job, JobStatus
from backoffice.runner import run_job
from payments import services
from payments.jobs import process_payment, recover_payment
from payments.models import Payment, Refund, SimulatedGatewayRecord, new_request_key
from payments.states import (
    REFUND_HOLDING,
    REFUND_TRANSITIONS,
    TRANSITIONS,
    AttemptOutcome,
    PaymentStatus,
    RefundStatus,
)
from tests.factories import MerchantFactory, UserFactory

ALLOWED = {(source, target) for sources, target in TRANSITIONS.values() for source in sources}
REFUND_ALLOWED = {(source, target) for sources, target in REFUND_TRANSITIONS.values() for source in sources}
TOKENS = st.sampled_from(["tok_success", "tok_decline", "tok_timeout", "tok_error"])


class PaymentMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.merchant = MerchantFactory()
        self.operator = UserFactory(username="machine-operator")
        # Who asks for refunds and who decides them; "both" may do either, never on one refund.
        self.staff = {
            "finance": UserFactory(username="machine-finance", roles=["Finance"]),
            "approver": UserFactory(username="machine-approver", roles=["Approvers"]),
            "both": UserFactory(username="machine-both", roles=["Finance", "Approvers"]),
        }
        self.payment_ids: list[int] = []
        self.keys: dict[str, tuple[str, int]] = {}

    def _pick(self, index: int) -> Payment:
        return Payment.objects.get(pk=self.payment_ids[index % len(self.payment_ids)])

    @rule(token=TOKENS, key=st.sampled_from(["a", "b", "c", "d", "e", "f"]), amount=st.integers(1, 10**6))
    def create(self, token, key, amount):
        try:
            payment = services.payment_create(
                merchant=self.merchant,
                amount_minor=amount,
                currency="EUR",
                payment_method=token,
                idempotency_key=f"st{id(self):x}-k{key}",  # hex: no long digit run (card-number check)
            )[0]
        except ValidationError:
            assert self.keys[key] != (token, amount), "the same parameters must return the first payment"
            return
        if key in self.keys:
            assert self.keys[key] == (token, amount) and payment.pk in self.payment_ids
        else:
            self.keys[key] = (token, amount)
            self.payment_ids.append(payment.pk)

    @precondition(lambda self: self.payment_ids)
    @rule(index=st.integers(0, 100), times=st.integers(1, 2))
    def process(self, index, times):
        payment = self._pick(index)
        for _ in range(times):
            process_payment(payment.pk)

    @precondition(lambda self: self.payment_ids)
    @rule(index=st.integers(0, 100), times=st.integers(1, 2))
    def run_queued_jobs(self, index, times):
        """The runner, as a worker would run it, possibly delivered twice."""
        payment = self._pick(index)
        for job in Job.objects.filter(object_id=str(payment.pk), status=JobStatus.PENDING):
            for _ in range(times):
                run_job(str(job.pk))

    @precondition(lambda self: self.payment_ids)
    @rule(index=st.integers(0, 100))
    def recover(self, index):
        recover_payment(self._pick(index).pk)

    @precondition(lambda self: self.payment_ids)
    @rule(index=st.integers(0, 100))
    def retry(self, index):
        payment = self._pick(index)
        try:
            services.payment_retry(payment=payment, actor=self.operator, reason="retry")
        except ValidationError:
            assert payment.status != PaymentStatus.FAILED

    @precondition(lambda self: self.payment_ids)
    @rule(index=st.integers(0, 100))
    def cancel(self, index):
        payment = self._pick(index)
        try:
            services.payment_cancel(payment=payment, actor=self.operator, reason="cancel")
        except ValidationError:
            assert payment.status != PaymentStatus.PENDING

    @precondition(lambda self: self.payment_ids)
    @rule(index=st.integers(0, 100), amount=st.integers(1, 10**6), by=st.sampled_from(["finance", "both"]))
    def request_refund(self, index, amount, by):
        payment, requester = self._pick(index), self.staff[by]
        try:
            services.refund_request(
                payment=payment,
                amount_minor=amount,
                reason="returned",
                requested_by=requester,
                request_key=new_request_key("test"),
            )
        except ValidationError:
            pass

    @precondition(lambda self: Refund.objects.filter(payment_id__in=self.payment_ids).exists())
    @rule(index=st.integers(0, 100), by=st.sampled_from(["approver", "both"]), approve=st.booleans())
    def decide_refund(self, index, by, approve):
        refunds = list(Refund.objects.filter(payment_id__in=self.payment_ids).order_by("pk"))
        refund = refunds[index % len(refunds)]
        decider = self.staff[by]
        try:
            if approve:
                services.refund_approve(refund=refund, approver=decider, note="checked")
            else:
                services.refund_reject(refund=refund, approver=decider, note="not returned")
        except ValidationError:
            refund.refresh_from_db()
            assert refund.status != RefundStatus.REQUESTED or refund.requested_by_id == decider.pk

    @invariant()
    def history_is_a_chain_of_allowed_transitions(self):
        for payment in Payment.objects.filter(pk__in=self.payment_ids).prefetch_related("events"):
            events = list(payment.events.all())
            assert (events[0].from_status, events[0].to_status) == ("", PaymentStatus.PENDING)
            for before, after in zip(events, events[1:]):
                assert before.to_status == after.from_status
                assert (after.from_status, after.to_status) in ALLOWED
            assert events[-1].to_status == payment.status

    @invariant()
    def money_moves_at_most_once(self):
        for payment in Payment.objects.filter(pk__in=self.payment_ids).prefetch_related("attempts"):
            attempts = list(payment.attempts.all())
            keys = [attempt.idempotency_key for attempt in attempts]
            charges = SimulatedGatewayRecord.objects.filter(idempotency_key__in=keys)
            assert charges.values("idempotency_key").distinct().count() == charges.count()
            assert charges.filter(approved=True).count() <= 1, "a payment was charged twice"
            succeeded = [a for a in attempts if a.outcome == AttemptOutcome.SUCCEEDED]
            assert len(succeeded) <= 1
            if payment.status == PaymentStatus.SUCCEEDED:
                assert len(succeeded) == 1
            if payment.status in (PaymentStatus.PENDING, PaymentStatus.CANCELED, PaymentStatus.FAILED):
                assert not succeeded
            open_attempts = [a for a in attempts if a.outcome == AttemptOutcome.PENDING]
            assert len(open_attempts) <= (1 if payment.status == PaymentStatus.PROCESSING else 0)

    @invariant()
    def refunds_never_exceed_the_capture(self):
        for payment in Payment.objects.filter(pk__in=self.payment_ids):
            refunds = payment.refunds.all()
            held = refunds.filter(status__in=REFUND_HOLDING).aggregate(total=Sum("amount_minor"))["total"] or 0
            refunded = refunds.filter(status=RefundStatus.SUCCEEDED).aggregate(total=Sum("amount_minor"))["total"] or 0
            assert held <= payment.amount_minor
            if refunds.exists():
                assert payment.status in (
                    PaymentStatus.SUCCEEDED,
                    PaymentStatus.PARTIALLY_REFUNDED,
                    PaymentStatus.REFUNDED,
                )
            if refunded == payment.amount_minor:
                assert payment.status == PaymentStatus.REFUNDED
            elif refunded:
                assert payment.status == PaymentStatus.PARTIALLY_REFUNDED

    @invariant()
    def approver_is_never_the_requester(self):
        refunds = Refund.objects.filter(payment_id__in=self.payment_ids)
        assert not refunds.filter(Q(approved_by=F("requested_by")) | Q(rejected_by=F("requested_by"))).exists()
        for refund in refunds.filter(needs_approval=True, status__in=REFUND_HOLDING - {RefundStatus.REQUESTED}):
            assert refund.approved_by_id not in (None, refund.requested_by_id)

    @invariant()
    def refund_history_is_a_chain_of_allowed_transitions(self):
        for refund in Refund.objects.filter(payment_id__in=self.payment_ids).prefetch_related("events"):
            events = list(refund.events.all())
            assert (events[0].from_status, events[0].to_status) == ("", RefundStatus.REQUESTED)
            for before, after in zip(events, events[1:]):
                assert before.to_status == after.from_status
                assert (after.from_status, after.to_status) in REFUND_ALLOWED
            assert events[-1].to_status == refund.status


@pytest.mark.django_db
@override_settings(PAYMENTS_REFUND_APPROVAL_THRESHOLD={"default": "500"})  # some refunds wait for a second person
def test_random_operation_sequences_keep_the_payment_invariants():
    run_state_machine_as_test(
        PaymentMachine,
        settings=settings(
            max_examples=20,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
