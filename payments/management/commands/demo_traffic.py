"""A steady trickle of demo payments of every kind, so the demo always has something to act
on: pending, unknown, failed and needs-review payments, failed jobs, refunds awaiting approval.
Started by `make run` (off with `make run TRAFFIC=0`). Development only."""

import random
import secrets
import signal
import threading
import time
from collections import Counter

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, transaction
from django.test import override_settings

from backoffice.models import Job
from backoffice.services import job_cancel
from payments import services
from payments.models import Merchant, Payment, new_request_key
from payments.states import PaymentStatus

AMOUNTS = {"EUR": (500, 250_00), "JPY": (300, 90_000), "KWD": (1_000, 95_000)}
# token -> weight: mostly approvals, some of every trouble an operator handles.
TOKENS = {
    "tok_success": 60,
    "tok_decline": 14,
    "tok_timeout": 8,  # unknown, then found by a lookup
    "tok_error": 5,  # unknown, then not found: failed
    "tok_unreachable": 4,  # unknown through every lookup: needs review
    "tok_crash": 3,  # the job fails for real: requeue it
}


class Command(BaseCommand):
    help = "Create demo payments (and refunds) every few seconds until stopped."

    def add_arguments(self, parser):
        parser.add_argument("--interval", type=float, default=3.0, help="Seconds between payments.")
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument("--count", type=int, default=0, help="Stop after this many payments (0: never).")

    def handle(self, *args, interval, seed, count, **options):
        if not settings.DEBUG:
            raise CommandError("demo_traffic is for development (DJANGO_DEBUG=true) only.")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        rng = random.Random(seed)
        merchants = list(Merchant.objects.filter(is_active=True).order_by("pk")[:3])
        finance = get_user_model().objects.filter(groups__name="Finance").order_by("pk").first()
        operator = get_user_model().objects.filter(groups__name="Operators").order_by("pk").first()
        if not merchants or finance is None or operator is None:
            raise CommandError("No demo data: run `manage.py seed_demo` first.")
        made: Counter = Counter()
        last_report = time.monotonic()
        payments = 0
        while not stop.wait(interval * rng.uniform(0.5, 1.5)) and not (count and payments >= count):
            payments += 1
            try:
                made[self._one_payment(rng, rng.choice(merchants), operator)] += 1
                if rng.random() < 0.12:
                    made[self._one_refund(rng, finance)] += 1
            except (ValidationError, DatabaseError) as error:
                made["refused"] += 1
                self.stderr.write(f"traffic: {error}")
            if time.monotonic() - last_report >= 60:
                self.stdout.write(
                    "traffic, last minute: " + ", ".join(f"{n} {what}" for what, n in sorted(made.items()))
                )
                made.clear()
                last_report = time.monotonic()

    def _one_payment(self, rng, merchant, operator) -> str:
        currency = {"fjord-coffee": "EUR", "kyoto-lantern": "JPY", "gulf-marine": "KWD"}.get(merchant.slug, "EUR")
        token = rng.choices(list(TOKENS), weights=list(TOKENS.values()))[0]
        orphan = rng.random() < 0.03
        with transaction.atomic():
            payment = services.payment_create(
                merchant=merchant,
                amount_minor=rng.randint(*AMOUNTS[currency]),
                currency=currency,
                payment_method=token,
                idempotency_key=f"traffic-{secrets.token_urlsafe(8)}",
                merchant_reference=f"ORD-{rng.randint(10000, 99999)}",
                customer_email=f"customer{rng.randint(1, 500)}@shopper.example",
                description="Demo traffic",
            )[0]
            if orphan:
                # Its job canceled before commit: a pending payment with no live job ("Process now").
                for job in Job.objects.filter(object_id=str(payment.pk), func=services.PROCESS_JOB):
                    job_cancel(job=job, actor=operator, reason="demo: a payment whose job was canceled")
        return "pending without a job" if orphan else token

    def _one_refund(self, rng, finance) -> str:
        recent = Payment.objects.filter(status=PaymentStatus.SUCCEEDED).order_by("-created_at")[:20]
        payment = rng.choice(list(recent)) if recent else None
        if payment is None:
            return "no refund (nothing captured yet)"
        if rng.random() < 0.5:
            # Above every threshold: waits for a second person (an approver).
            with override_settings(PAYMENTS_REFUND_APPROVAL_THRESHOLD={"default": "0.001"}):
                services.refund_request(
                    payment=payment,
                    amount_minor=payment.amount_minor,
                    reason="customer dispute",
                    requested_by=finance,
                    request_key=new_request_key("demo"),
                )
            return "refund awaiting approval"
        services.refund_request(
            payment=payment,
            amount_minor=max(1, payment.amount_minor // 4),
            reason="item returned",
            requested_by=finance,
            request_key=new_request_key("demo"),
        )
        return "refund"
