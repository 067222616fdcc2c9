"""Random sequences of create / process / retry / cancel / recover / duplicate runs, with
the invariants a payments team relies on checked after every step."""

import pytest
from django.core.exceptions import ValidationError
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from backoffice.models import Job, JobStatus
from backoffice.runner import run_job
from payments import services
from payments.jobs import process_payment, recover_payment
from payments.models import Payment, SimulatedGatewayRecord
from payments.states import TRANSITIONS, AttemptOutcome, PaymentStatus
from tests.factories import MerchantFactory, UserFactory

ALLOWED = {(source, target) for sources, target in TRANSITIONS.values() for source in sources}
TOKENS = st.sampled_from(["tok_success", "tok_decline", "tok_timeout", "tok_error"])


class PaymentMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.merchant = MerchantFactory()
        self.operator = UserFactory(username="machine-operator")
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
                idempotency_key=f"{id(self)}-{key}",
            )
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


@pytest.mark.django_db
def test_random_operation_sequences_keep_the_payment_invariants():
    run_state_machine_as_test(
        PaymentMachine,
        settings=settings(
            max_examples=40,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
