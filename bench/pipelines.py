"""The two baselines Paydesk's job pipeline is measured against. Workers import this module
by dotted path, so it holds only job bodies and producers, nothing of the script."""

from functools import cache

import django_rq
from django.db import transaction

from payments.models import Merchant, Payment
from payments.services.common import event_record
from payments.services.payments import PROCESS_JOB
from payments.validators import validate_new_payment

NOOP_JOB = "bench.pipelines.noop"


def noop() -> None:
    """The cheapest job RQ can run: the floor of a worker class."""


@cache
def payments_queue():
    # Built once: django_rq.get_queue opens a new Redis connection pool on every call.
    # on_db_commit: a rolled-back payment must not be processed (our settings say "auto").
    return django_rq.get_queue("payments", commit_mode="on_db_commit")


def plain_job_id(payment: Payment) -> str:
    return f"plain-{payment.public_id}"


def plain_payment_create(
    *, merchant: Merchant, amount_minor: int, currency: str, payment_method: str, idempotency_key: str
) -> Payment:
    """payment_create without the Job row, as one would write it with django-rq alone: the
    same checks, the payment and its `created` event in one transaction, and the same job
    body (`payments.jobs.process_payment`) pushed straight to RQ once that commits."""
    validate_new_payment(
        merchant=merchant,
        amount_minor=amount_minor,
        currency=currency,
        payment_method=payment_method,
        idempotency_key=idempotency_key,
    )
    with transaction.atomic():
        existing = Payment.objects.filter(merchant=merchant, idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing
        with transaction.atomic():
            payment = Payment.objects.create(
                merchant=merchant,
                idempotency_key=idempotency_key,
                amount_minor=amount_minor,
                currency=currency,
                payment_method=payment_method,
            )
        event_record(payment, from_status="", reason="created")
        payments_queue().enqueue_call(PROCESS_JOB, kwargs={"payment_id": payment.pk}, job_id=plain_job_id(payment))
    return payment
