"""Payments processed many at a time by one worker (backoffice.batch drives it): one short
transaction starts a whole batch (lock, pending -> processing, attempts, events), the
processor calls run concurrently outside any lock, and one short transaction applies a batch
of answers (attempts, transitions, events, the jobs they create). Each payment goes through
the same states, events, signals, idempotency keys and checks as payments.jobs.process_payment
one at a time; a batch whose bulk transaction fails is redone one payment at a time, so one
bad payment fails only its own Job."""

import logging
import time
from collections import Counter, defaultdict
from concurrent.futures import Future
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from backoffice.batch import Call, Done, database_unreachable_error
from backoffice.metrics import metrics_record
from payments.bulk import _transition_many
from payments.gateways import ChargeRequest, ChargeResult, GatewayOutcome, get_gateway
from payments.models import Payment, PaymentAttempt
from payments.services import payment_charge_result_apply, payment_processing_start
from payments.services.payments import _schedule_recovery
from payments.states import AttemptOutcome, PaymentStatus

logger = logging.getLogger(__name__)

SKIPPED = {"skipped": "nothing to process"}


class PaymentBatch:
    """The batch handler of payments.jobs.process_payment (JOBS_BATCH_HANDLERS)."""

    def __init__(self):
        self.max_in_flight = settings.PAYMENTS_BATCH_IN_FLIGHT
        self.gateway = get_gateway()
        self.sent: dict[int, float] = {}  # attempt id -> monotonic time its charge was sent

    def start(self, kwargs_list: list[dict]) -> list[Call | Done]:
        payment_ids = [kwargs["payment_id"] for kwargs in kwargs_list]
        errors: dict[int, Exception]
        try:
            attempts = payments_processing_start(payment_ids=payment_ids)
            errors = {}
        except Exception as error:
            if database_unreachable_error(error):
                raise  # the batch waits for PostgreSQL and starts these again
            logger.exception("bulk start of %s payments failed; starting them one by one", len(payment_ids))
            attempts, errors = {}, {}
            for payment_id in dict.fromkeys(payment_ids):
                try:
                    attempts[payment_id] = payment_processing_start(payment_id=payment_id)
                except Exception as failure:
                    errors[payment_id] = failure
        started: list[Call | Done] = []
        seen: set[int] = set()
        for payment_id in payment_ids:
            attempt = attempts.get(payment_id)
            if payment_id in errors:
                started.append(Done(error=errors[payment_id]))
            elif attempt is None or payment_id in seen:  # done already, or a second Job of this batch
                started.append(Done(result=SKIPPED))
            else:
                seen.add(payment_id)
                self.sent[attempt.pk] = time.monotonic()
                started.append(Call(future=submit_charge(self.gateway, charge_request(attempt)), token=attempt.pk))
        return started

    def finish(self, answers: list[tuple[int, object]]) -> list[Done]:
        results = [(attempt_id, answer) for attempt_id, answer in answers if isinstance(answer, ChargeResult)]
        applied: dict[int, Any]  # a Payment, or what applying its answer raised
        try:
            applied = dict(payments_charge_results_apply(results=results))
        except Exception as error:
            if database_unreachable_error(error):
                raise  # the batch waits for PostgreSQL and applies these again
            logger.exception("bulk apply of %s answers failed; applying them one by one", len(results))
            applied = {}
            for attempt_id, result in results:
                try:
                    applied[attempt_id] = payment_charge_result_apply(attempt_id=attempt_id, result=result)
                except Exception as error:
                    applied[attempt_id] = error
        outcomes = []
        for attempt_id, answer in answers:
            if isinstance(answer, BaseException):  # the call itself raised: retried under the same key
                outcomes.append(Done(error=answer))
            elif isinstance(applied.get(attempt_id), BaseException):
                outcomes.append(Done(error=applied[attempt_id]))
            else:
                outcomes.append(Done(result={"status": applied[attempt_id].status}))
        self._record_calls(answers)
        return outcomes

    def _record_calls(self, answers: list[tuple[int, object]]) -> None:
        """processor_call_seconds for each charge, as payments.jobs records one job's."""
        now = time.monotonic()
        observations = []
        for attempt_id, answer in answers:
            sent = self.sent.pop(attempt_id, now)
            if isinstance(answer, ChargeResult):
                outcome, seconds = answer.outcome.value, answer.latency_ms / 1000
            else:
                outcome, seconds = "error", now - sent
            observations.append(("processor_call_seconds", {"operation": "charge", "outcome": outcome}, seconds))
        metrics_record(observations=observations)


def charge_request(attempt: PaymentAttempt) -> ChargeRequest:
    payment = attempt.payment
    return ChargeRequest(
        idempotency_key=attempt.idempotency_key,
        amount_minor=payment.amount_minor,
        currency=payment.currency,
        payment_method=payment.payment_method,
        reference=payment.public_id,
    )


def submit_charge(gateway, request: ChargeRequest) -> Future:
    """The charge in flight on the HTTP gateway's event loop. A gateway with only the blocking
    call (the in-process simulated one of unit tests, which writes its ledger through this
    thread's database connection) is called here and now, one after the other."""
    submit = getattr(gateway, "submit_charge", None)
    if submit is not None:
        return submit(request)
    answered: Future = Future()
    try:
        answered.set_result(gateway.charge(request))
    except Exception as error:
        answered.set_exception(error)
    return answered


def payments_processing_start(*, payment_ids: list[int]) -> dict[int, PaymentAttempt | None]:
    """payment_processing_start for many payments in one transaction: lock them (in id order,
    so concurrent batches cannot deadlock), move the pending ones to processing with a new
    attempt each, and return for each the attempt to send: the new one, or the open one of a
    payment whose previous run died mid-call (same key). None where there is nothing to do."""
    with transaction.atomic():
        payments = list(
            Payment.objects.select_for_update(of=("self",))
            .select_related("merchant")
            .filter(pk__in=set(payment_ids))
            .order_by("pk")
        )
        missing = set(payment_ids) - {payment.pk for payment in payments}
        if missing:
            raise Payment.DoesNotExist(f"payments {sorted(missing)} do not exist")
        attempts: dict[int, PaymentAttempt | None] = {payment.pk: None for payment in payments}
        by_id = {payment.pk: payment for payment in payments}
        processing = [payment.pk for payment in payments if payment.status == PaymentStatus.PROCESSING]
        if processing:
            open_attempts = PaymentAttempt.objects.filter(
                payment_id__in=processing, outcome=AttemptOutcome.PENDING
            ).order_by("payment_id", "-number")
            for attempt in open_attempts:
                if attempts[attempt.payment_id] is None:
                    attempt.payment = by_id[attempt.payment_id]
                    attempts[attempt.payment_id] = attempt
        pending = [payment for payment in payments if payment.status == PaymentStatus.PENDING]
        if pending:
            made = Counter(
                dict(
                    PaymentAttempt.objects.filter(payment__in=pending)
                    .values("payment_id")
                    .annotate(made=Count("id"))
                    .values_list("payment_id", "made")
                )
            )
            _transition_many(pending, "start_processing", actor=None, reason="", actor_label="worker")
            created = PaymentAttempt.objects.bulk_create(
                [
                    PaymentAttempt(
                        payment=payment,
                        number=made[payment.pk] + 1,
                        idempotency_key=f"{payment.public_id}_a{made[payment.pk] + 1}",
                    )
                    for payment in pending
                ]
            )
            for attempt in created:
                attempts[attempt.payment_id] = attempt
    return attempts


def payments_charge_results_apply(*, results: list[tuple[int, ChargeResult]]) -> dict[int, Payment]:
    """payment_charge_result_apply for many answers in one transaction: lock the payments,
    record each answer on its attempt and move its payment (an answer already applied changes
    nothing), write the events, send the signals; unknown answers schedule the recovery job.
    Returns each attempt's payment."""
    if not results:
        return {}
    attempt_ids = {attempt_id for attempt_id, _ in results}
    with transaction.atomic():
        payments = {
            payment.pk: payment
            for payment in Payment.objects.select_for_update(of=("self",))
            .select_related("merchant")
            .filter(attempts__pk__in=attempt_ids)
            .order_by("pk")
        }
        attempts = {attempt.pk: attempt for attempt in PaymentAttempt.objects.filter(pk__in=attempt_ids)}
        now = timezone.now()
        transitions: dict[tuple[str, str], list[Payment]] = defaultdict(list)
        changed_attempts, unknown = [], []
        for attempt_id, result in results:
            attempt = attempts[attempt_id]
            payment = payments[attempt.payment_id]
            if attempt.outcome != AttemptOutcome.PENDING or payment.status != PaymentStatus.PROCESSING:
                continue
            attempt.gateway_reference = result.gateway_reference
            attempt.error_code = result.error_code
            attempt.error_message = result.error_message
            attempt.latency_ms = result.latency_ms
            attempt.completed_at = now
            if result.outcome == GatewayOutcome.SUCCEEDED:
                attempt.outcome = AttemptOutcome.SUCCEEDED
                transitions["succeed", "approved by the gateway"].append(payment)
            elif result.outcome == GatewayOutcome.DECLINED:
                attempt.outcome = AttemptOutcome.DECLINED
                transitions["fail", f"declined: {result.error_code}"].append(payment)
            else:
                attempt.outcome = AttemptOutcome.UNKNOWN
                transitions["mark_unknown", f"no clear answer from the gateway: {result.error_code}"].append(payment)
                unknown.append(payment)
            changed_attempts.append(attempt)
        if changed_attempts:
            # One UPDATE, one INSERT of events per kind of change, then each payment's signal.
            for (name, reason), moved in transitions.items():
                _transition_many(moved, name, actor=None, reason=reason, actor_label="worker")
            for payment in unknown:
                _schedule_recovery(payment, lookups_done=0)
            PaymentAttempt.objects.bulk_update(
                changed_attempts,
                ["outcome", "gateway_reference", "error_code", "error_message", "latency_ms", "completed_at"],
            )
    return {attempt_id: payments[attempts[attempt_id].payment_id] for attempt_id in attempt_ids}
