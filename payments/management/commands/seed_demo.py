import logging
import random
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from backoffice.models import Job, JobStatus
from backoffice.runner import run_job
from payments import services
from payments.figures import payment_figures_refresh
from payments.models import Membership, Merchant, Payment, new_request_key
from payments.roles import ensure_roles

MERCHANTS = [
    ("Fjord Coffee Roasters", "fjord-coffee", "billing@fjord-coffee.example", "EUR"),
    ("Kyoto Lantern Books", "kyoto-lantern", "accounts@kyoto-lantern.example", "JPY"),
    ("Gulf Marine Supply", "gulf-marine", "finance@gulf-marine.example", "KWD"),
]
STAFF = [("operator", "Operators"), ("finance", "Finance"), ("approver", "Approvers"), ("viewer", "Viewers")]
# Portal users of the first merchant: one owner (refunds, webhooks), one member (read, create).
PORTAL_USERS = [("fjord-owner", Membership.Role.OWNER), ("fjord-member", Membership.Role.MEMBER)]


def logins_file():
    return settings.RUN_DIR / "demo-logins.txt"


# A job the seed runs itself: `pending` while Redis is down, `queued` once a live Redis took it
# on commit (its RQ copy then finds it finished and does nothing).
NOT_STARTED = [JobStatus.PENDING, JobStatus.QUEUED]

# token -> how many payments end up in the state that token leads to
PLAN = [("tok_success", 110), ("tok_decline", 30), ("tok_timeout", 10), ("tok_error", 10)]


class Command(BaseCommand):
    help = "Seed demo data: three merchants, one staff user per role, a superuser, ~200 payments."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="Do nothing if demo data is already there.")

    def handle(self, *args, once, **options):
        if once and Merchant.objects.filter(slug=MERCHANTS[0][1]).exists():
            where = logins_file() if logins_file().exists() else "the first seed's output"
            self.stdout.write(
                f"Demo data already present; logins are in {where} "
                "(`manage.py changepassword <name>` sets a new password)."
            )
            return
        # The demo's history is made here, before `make run` starts the processor service: its
        # charges and refunds go through the in-process simulated gateway.
        with override_settings(PAYMENTS_GATEWAY="payments.gateways.simulated.SimulatedGateway"):
            self._seed()

    def _seed(self):
        # Redis may not be up yet: the pushes and metrics it misses are not worth a warning here.
        logging.getLogger("backoffice.services").setLevel(logging.ERROR)
        logging.getLogger("backoffice.metrics").setLevel(logging.ERROR)
        ensure_roles()
        logins = self._users()
        merchants = [
            Merchant.objects.get_or_create(slug=slug, defaults={"name": name, "contact_email": email})[0]
            for name, slug, email, _ in MERCHANTS
        ]
        currencies = {slug: currency for _, slug, _, currency in MERCHANTS}
        rng = random.Random(7)
        count = 0
        for token, how_many in PLAN:
            for _ in range(how_many):
                self._processed_payment(rng, merchants, currencies, token)
                count += 1
        operator = get_user_model().objects.get(username="operator")
        for _ in range(15):  # pending, waiting for the worker
            self._new_payment(rng, merchants, currencies, "tok_success")
        for _ in range(10):  # canceled by an operator
            services.payment_cancel(
                payment=self._new_payment(rng, merchants, currencies, "tok_success"),
                actor=operator,
                reason="customer asked to cancel",
            )
        for _ in range(10):  # failed, then retried by an operator: back to pending
            payment = self._processed_payment(rng, merchants, currencies, "tok_decline")
            services.payment_retry(payment=payment, actor=operator, reason="customer updated the card")
        for _ in range(5):  # processing, its worker killed mid-call: the sweeper will recover it
            payment = self._new_payment(rng, merchants, currencies, "tok_success")
            services.payment_processing_start(payment_id=payment.pk)
            Job.objects.filter(
                func=services.PROCESS_JOB,
                kwargs__payment_id=payment.pk,
                status__in=[JobStatus.PENDING, JobStatus.QUEUED],
            ).update(
                status=JobStatus.RUNNING,
                attempts=1,
                started_at=timezone.now() - timedelta(minutes=5),
                heartbeat_at=timezone.now() - timedelta(minutes=5),
                worker_name="demo-host:4242",
            )
        finance = get_user_model().objects.get(username="finance")
        succeeded = list(Payment.objects.filter(status="succeeded").order_by("pk")[:18])
        for payment in succeeded[:10]:  # partially refunded
            self._refund(payment, payment.amount_minor // 3, finance, "one item returned")
        for payment in succeeded[10:15]:  # fully refunded
            self._refund(payment, payment.amount_minor, finance, "order canceled after capture")
        with override_settings(PAYMENTS_REFUND_APPROVAL_THRESHOLD={"default": "0.001"}):
            for payment in succeeded[15:18]:  # waiting for an approver
                services.refund_request(
                    payment=payment,
                    amount_minor=payment.amount_minor,
                    reason="customer dispute",
                    requested_by=finance,
                    request_key=new_request_key("demo"),
                )
        logins += self._portal_users(merchants[0])
        payment_figures_refresh(days=32)
        total = Payment.objects.count()
        self.stdout.write(self.style.SUCCESS(f"Seeded {len(merchants)} merchants and {total} payments."))
        lines = [f"  {username:<13} {password:<18} {role}" for username, password, role in logins]
        path = logins_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text("\n".join(lines) + "\n")
        self.stdout.write(f"Logins written to {path} (demo only; change them with `manage.py changepassword`):")
        self.stdout.write("\n".join(lines))

    def _users(self):
        User = get_user_model()
        logins = []
        if not User.objects.filter(username="admin").exists():
            password = secrets.token_urlsafe(12)
            User.objects.create_superuser("admin", "admin@paydesk.example", password)
            logins.append(("admin", password, "superuser"))
        from django.contrib.auth.models import Group

        for username, group in STAFF:
            if User.objects.filter(username=username).exists():
                continue
            password = secrets.token_urlsafe(12)
            user = User.objects.create_user(username, f"{username}@paydesk.example", password, is_staff=True)
            user.groups.add(Group.objects.get(name=group))
            logins.append((username, password, group))
        return logins

    def _portal_users(self, merchant):
        User = get_user_model()
        logins = []
        for username, role in PORTAL_USERS:
            if User.objects.filter(username=username).exists():
                continue
            password = secrets.token_urlsafe(12)
            user = User.objects.create_user(username, f"{username}@{merchant.slug}.example", password)
            Membership.objects.create(user=user, merchant=merchant, role=role)
            logins.append((username, password, f"portal {role} of {merchant.name}"))
        return logins

    def _refund(self, payment, amount_minor, finance, reason):
        with override_settings(PAYMENTS_REFUND_APPROVAL_THRESHOLD={"default": "1000000000"}):
            services.refund_request(
                payment=payment,
                amount_minor=amount_minor,
                reason=reason,
                requested_by=finance,
                request_key=new_request_key("demo"),
            )
        for job in Job.objects.filter(func=services.REFUND_JOB, status__in=NOT_STARTED):
            run_job(str(job.pk))

    def _new_payment(self, rng, merchants, currencies, token) -> Payment:
        merchant = rng.choice(merchants)
        currency = currencies[merchant.slug]
        amount = {"EUR": rng.randint(500, 250_00), "JPY": rng.randint(300, 90_000), "KWD": rng.randint(1_000, 95_000)}
        return services.payment_create(
            merchant=merchant,
            amount_minor=amount[currency],
            currency=currency,
            payment_method=token,
            idempotency_key=f"demo-{secrets.token_urlsafe(8)}",
            merchant_reference=f"ORD-{rng.randint(10000, 99999)}",
            customer_email=f"customer{rng.randint(1, 500)}@shopper.example",
            description="Demo order",
        )[0]

    def _processed_payment(self, rng, merchants, currencies, token) -> Payment:
        """Create and process at once with the real runner, as a worker would."""
        with transaction.atomic():
            payment = self._new_payment(rng, merchants, currencies, token)
        for job in Job.objects.filter(func=services.PROCESS_JOB, kwargs__payment_id=payment.pk, status__in=NOT_STARTED):
            run_job(str(job.pk))
        payment.refresh_from_db()
        return payment
