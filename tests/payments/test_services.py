import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings

from backoffice.models import Job, JobStatus
from payments import services
from payments.gateways import LookupResult
from payments.gateways.base import GatewayOutcome
from payments.jobs import process_payment, recover_payment
from payments.models import Payment, PaymentAttempt, PaymentEvent, SimulatedGatewayRecord
from payments.signals import payment_status_changed
from payments.states import AttemptOutcome, PaymentStatus
from payments.validators import contains_card_number

pytestmark = pytest.mark.django_db


def statuses(payment):
    return [(event.from_status, event.to_status) for event in payment.events.all()]


def run_recovery_jobs(payment):
    """Run every recovery job queued for the payment, as a worker would once they are due."""
    for job in Job.objects.filter(object_id=str(payment.pk), func=services.RECOVER_JOB, status=JobStatus.PENDING):
        recover_payment(**job.kwargs)
        Job.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED)


# --- payment_create ------------------------------------------------------------------------


def test_create_writes_pending_payment_event_and_processing_job(make_payment):
    payment = make_payment(merchant_reference="ORD-1", customer_email="ann@shop.example")
    assert payment.status == PaymentStatus.PENDING
    assert payment.public_id.startswith("pay_") and len(payment.public_id) == 28
    assert statuses(payment) == [("", "pending")]
    job = Job.objects.get(object_id=str(payment.pk))
    assert (job.func, job.kwargs, job.queue) == (
        "payments.jobs.process_payment",
        {"payment_id": payment.pk},
        "payments",
    )


def test_public_ids_are_random_not_sequential(make_payment):
    ids = {make_payment().public_id for _ in range(20)}
    assert len(ids) == 20


def test_same_idempotency_key_same_parameters_returns_the_same_payment(make_payment):
    first = make_payment(idempotency_key="order-77")
    again = make_payment(idempotency_key="order-77")
    assert again.pk == first.pk
    assert Payment.objects.count() == 1
    assert Job.objects.count() == 1


def test_same_idempotency_key_other_parameters_is_refused_and_writes_nothing(make_payment):
    first = make_payment(idempotency_key="order-77")
    with pytest.raises(ValidationError) as error:
        make_payment(idempotency_key="order-77", amount_minor=999)
    assert "amount_minor" in str(error.value) and first.public_id in str(error.value)
    assert Payment.objects.count() == 1 and Job.objects.count() == 1


def test_same_key_for_another_merchant_is_another_payment(make_payment):
    from tests.factories import MerchantFactory

    make_payment(idempotency_key="k1")
    make_payment(idempotency_key="k1", merchant=MerchantFactory())
    assert Payment.objects.count() == 2


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"currency": "ZZZ"}, "currency"),
        ({"currency": "XAU"}, "currency"),
        ({"amount_minor": 0}, "amount_minor"),
        ({"amount_minor": -100}, "amount_minor"),
        ({"amount_minor": 12.5}, "amount_minor"),
        ({"amount_minor": 10**12}, "amount_minor"),
        ({"payment_method": "4242 4242 4242 4242"}, "payment_method"),
        ({"payment_method": "4242424242424242"}, "payment_method"),
        ({"payment_method": ""}, "payment_method"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "k" * 101}, "idempotency_key"),
        ({"customer_email": "not-an-email"}, "customer_email"),
        ({"merchant_reference": "r" * 101}, "merchant_reference"),
        ({"payment_method": "a4111_1111_1111_1111"}, "payment_method"),
        ({"description": "card 4111-1111-1111-1111 exp 12/29"}, "description"),
        ({"merchant_reference": "4111111111111111"}, "merchant_reference"),
        ({"customer_email": "4111111111111111@shop.example"}, "customer_email"),
    ],
)
def test_bad_input_is_refused_clearly_and_writes_nothing(make_payment, overrides, field):
    with pytest.raises(ValidationError) as error:
        make_payment(**overrides)
    assert field in error.value.message_dict
    assert Payment.objects.count() == 0
    assert Job.objects.count() == 0 and PaymentEvent.objects.count() == 0


def test_card_numbers_are_not_echoed_in_the_error(make_payment):
    with pytest.raises(ValidationError) as error:
        make_payment(payment_method="4242424242424242")
    assert "4242424242424242" not in str(error.value)


def test_inactive_merchant_cannot_take_payments(make_payment, merchant):
    merchant.is_active = False
    merchant.save()
    with pytest.raises(ValidationError):
        make_payment()
    assert Payment.objects.count() == 0


# --- processing through the job bodies -------------------------------------------------------


def test_tok_success_succeeds_with_one_charge(make_payment):
    payment = make_payment(payment_method="tok_success")
    assert process_payment(payment.pk) == {"status": "succeeded"}
    payment.refresh_from_db()
    attempt = payment.attempts.get()
    assert attempt.outcome == AttemptOutcome.SUCCEEDED and attempt.gateway_reference.startswith("sim_ch_")
    assert statuses(payment) == [("", "pending"), ("pending", "processing"), ("processing", "succeeded")]
    assert SimulatedGatewayRecord.objects.filter(idempotency_key=attempt.idempotency_key).count() == 1


def test_tok_decline_fails_with_the_gateway_code(make_payment):
    payment = make_payment(payment_method="tok_decline")
    process_payment(payment.pk)
    payment.refresh_from_db()
    attempt = payment.attempts.get()
    assert payment.status == PaymentStatus.FAILED
    assert (attempt.outcome, attempt.error_code) == (AttemptOutcome.DECLINED, "card_declined")
    assert attempt.error_message


def test_tok_timeout_goes_unknown_then_recovery_finds_it_succeeded(make_payment):
    payment = make_payment(payment_method="tok_timeout")
    process_payment(payment.pk)
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.UNKNOWN
    recovery = Job.objects.get(object_id=str(payment.pk), func=services.RECOVER_JOB)
    assert recovery.status == JobStatus.PENDING
    run_recovery_jobs(payment)
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.attempts.get().outcome == AttemptOutcome.SUCCEEDED
    assert SimulatedGatewayRecord.objects.count() == 1


def test_tok_error_goes_unknown_then_recovery_finds_nothing_and_fails(make_payment):
    payment = make_payment(payment_method="tok_error")
    process_payment(payment.pk)
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.UNKNOWN
    run_recovery_jobs(payment)
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.FAILED
    assert payment.attempts.get().outcome == AttemptOutcome.NOT_FOUND
    assert SimulatedGatewayRecord.objects.count() == 0


def test_unclear_lookups_follow_the_schedule_then_flag_for_review(make_payment, settings, monkeypatch):
    settings.PAYMENTS_RECOVERY_SCHEDULE_SECONDS = [0, 60]
    payment = make_payment(payment_method="tok_error")
    process_payment(payment.pk)
    from payments.gateways.simulated import SimulatedGateway

    monkeypatch.setattr(SimulatedGateway, "lookup", lambda self, key: LookupResult(outcome=GatewayOutcome.UNKNOWN))
    run_recovery_jobs(payment)  # first look: unclear, the second is scheduled a minute later
    later = Job.objects.get(object_id=str(payment.pk), func=services.RECOVER_JOB, status=JobStatus.PENDING)
    assert (later.run_at - later.created_at).total_seconds() == pytest.approx(60, abs=2)
    run_recovery_jobs(payment)  # second and last look: still unclear
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.UNKNOWN and payment.needs_review
    assert not Job.objects.filter(
        object_id=str(payment.pk), func=services.RECOVER_JOB, status=JobStatus.PENDING
    ).exists()


def test_a_duplicate_run_charges_nothing_and_records_nothing(make_payment):
    payment = make_payment()
    process_payment(payment.pk)
    events, attempts = PaymentEvent.objects.count(), PaymentAttempt.objects.count()
    assert process_payment(payment.pk) == {"skipped": "nothing to process"}
    assert recover_payment(payment.pk) == {"skipped": "not unknown"}
    assert (PaymentEvent.objects.count(), PaymentAttempt.objects.count()) == (events, attempts)
    assert SimulatedGatewayRecord.objects.count() == 1


def test_a_run_that_died_mid_call_resumes_with_the_same_attempt_key(make_payment):
    payment = make_payment()
    # The first run moved it to processing and reached the gateway, then its worker died.
    attempt = services.payment_processing_start(payment_id=payment.pk)
    from payments.gateways import ChargeRequest, get_gateway

    get_gateway().charge(ChargeRequest(attempt.idempotency_key, payment.amount_minor, "EUR", "tok_success", "x"))
    assert process_payment(payment.pk) == {"status": "succeeded"}
    assert PaymentAttempt.objects.count() == 1
    assert SimulatedGatewayRecord.objects.count() == 1


# --- staff operations --------------------------------------------------------------------------


def test_retry_moves_failed_to_pending_with_a_new_attempt_key(make_payment, operator):
    payment = make_payment(payment_method="tok_decline")
    process_payment(payment.pk)
    services.payment_retry(payment=payment, actor=operator, reason="card updated")
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.PENDING
    assert payment.events.last().actor == operator
    process_payment(payment.pk)
    keys = list(payment.attempts.values_list("idempotency_key", flat=True))
    assert len(keys) == 2 and len(set(keys)) == 2


@pytest.mark.parametrize("status", ["pending", "processing", "succeeded", "unknown", "canceled"])
def test_retry_refuses_anything_but_failed(merchant, operator, status):
    from tests.factories import PaymentFactory

    payment = PaymentFactory(merchant=merchant, status=status)
    with pytest.raises(ValidationError, match="not failed"):
        services.payment_retry(payment=payment, actor=operator)
    payment.refresh_from_db()
    assert payment.status == status and not payment.events.exists()


def test_cancel_then_the_queued_job_does_nothing(make_payment, operator):
    payment = make_payment()
    services.payment_cancel(payment=payment, actor=operator, reason="customer changed their mind")
    assert process_payment(payment.pk) == {"skipped": "nothing to process"}
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.CANCELED
    assert SimulatedGatewayRecord.objects.count() == 0


def test_process_now_refuses_a_payment_already_queued(make_payment, operator):
    payment = make_payment()
    with pytest.raises(ValidationError, match="already queued"):
        services.payment_process_now(payment=payment, actor=operator)
    Job.objects.filter(object_id=str(payment.pk)).update(status=JobStatus.FAILED)
    job = services.payment_process_now(payment=payment, actor=operator, reason="job had failed")
    assert job.status == JobStatus.PENDING and job.requested_by == operator


def test_the_signal_is_sent_on_every_transition_inside_the_transaction(make_payment):
    # The test itself runs in a transaction, so `in_atomic_block` is always true here: count
    # the atomic blocks open beyond the test's own instead.
    from django.db import connection

    test_depth = len(connection.atomic_blocks)
    seen = []

    def receiver(sender, payment, event, from_status, to_status, **kwargs):
        in_atomic = len(connection.atomic_blocks) > test_depth
        seen.append((from_status, to_status, in_atomic, event.pk is not None))

    payment_status_changed.connect(receiver)
    try:
        payment = make_payment(payment_method="tok_timeout")
        process_payment(payment.pk)
        run_recovery_jobs(payment)
    finally:
        payment_status_changed.disconnect(receiver)
    assert [(f, t) for f, t, _, _ in seen] == [
        ("", "pending"),
        ("pending", "processing"),
        ("processing", "unknown"),
        ("unknown", "succeeded"),
    ]
    assert all(in_atomic and has_event for _, _, in_atomic, has_event in seen)


@override_settings(PAYMENTS_GATEWAY_LATENCY_MS=0)
def test_processing_job_is_enqueued_only_on_commit(django_capture_on_commit_callbacks, merchant):
    import django_rq

    queue = django_rq.get_queue("payments")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.payment_create(
            merchant=merchant, amount_minor=100, currency="EUR", payment_method="tok_success", idempotency_key="c1"
        )
    assert queue.count == 0 and len(callbacks) == 1
    callbacks[0]()
    assert queue.count == 1
    job = Job.objects.get()
    assert queue.job_ids == [str(job.pk)] and job.status == JobStatus.QUEUED


@pytest.mark.parametrize(
    "text", ["ORD-2026-000123", "order 1234567890123 shipped", "+44 20 7946 0958", "tok_success", "2026-11-26 20:00"]
)
def test_ordinary_references_are_not_mistaken_for_card_numbers(text):
    assert not contains_card_number(text)
