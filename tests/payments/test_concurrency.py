"""Races between real threads, each on its own PostgreSQL connection."""

import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from payments import services
from payments.jobs import process_payment
from payments.models import Payment, PaymentAttempt, PaymentEvent, SimulatedGatewayRecord, new_request_key

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.needs_postgres]


def race(count: int, target):
    """Run target(i) in `count` threads released at the same instant; return results/errors."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def run(i):
        try:
            barrier.wait()
            results[i] = target(i)
        except Exception as error:  # noqa: BLE001 - the test inspects it
            results[i] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_double_submit_with_one_key_creates_one_payment(merchant):
    def submit(_):
        return services.payment_create(
            merchant=merchant,
            amount_minor=500,
            currency="EUR",
            payment_method="tok_success",
            idempotency_key="double-click",
        )[0].pk

    results = race(6, submit)
    assert all(isinstance(result, int) for result in results), results
    assert len(set(results)) == 1
    assert Payment.objects.count() == 1 and PaymentEvent.objects.count() == 1


def test_one_key_with_different_amounts_at_once_keeps_one_payment(merchant):
    def submit(i):
        return services.payment_create(
            merchant=merchant,
            amount_minor=500 + i % 2,
            currency="EUR",
            payment_method="tok_success",
            idempotency_key="racy",
        )[0].pk

    results = race(6, submit)
    assert Payment.objects.count() == 1
    winner = Payment.objects.get()
    for i, result in enumerate(results):
        if 500 + i % 2 == winner.amount_minor:
            assert result == winner.pk
        else:
            assert isinstance(result, ValidationError)


def test_the_same_payment_processed_by_two_workers_at_once_is_charged_once(make_payment):
    payment = make_payment()
    race(4, lambda _: process_payment(payment.pk))
    payment.refresh_from_db()
    assert payment.status == "succeeded"
    assert PaymentAttempt.objects.count() == 1
    assert SimulatedGatewayRecord.objects.count() == 1
    assert list(payment.events.values_list("to_status", flat=True)) == ["pending", "processing", "succeeded"]


def test_concurrent_refunds_never_exceed_the_capture(make_payment):
    from payments.models import Refund
    from tests.factories import UserFactory

    payment = make_payment(amount_minor=100_00)
    process_payment(payment.pk)
    payment.refresh_from_db()
    staff = [UserFactory(username=f"finance-{i}", roles=["Finance"]) for i in range(5)]

    def refund(i):
        return services.refund_request(
            payment=payment,
            amount_minor=30_00,
            reason="race",
            requested_by=staff[i],
            request_key=new_request_key("test"),
        )[0]

    results = race(5, refund)
    granted = [result for result in results if isinstance(result, Refund)]
    refused = [result for result in results if isinstance(result, ValidationError)]
    assert (len(granted), len(refused)) == (3, 2), results
    assert sum(refund.amount_minor for refund in Refund.objects.all()) == 90_00
    assert "remains refundable" in str(refused[0])
