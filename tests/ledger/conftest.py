import pytest

from backoffice.models import Job, JobStatus
from backoffice.runner import run_job
from ledger.models import Account
from ledger.roles import ensure_ledger_roles
from payments import services as payment_services
from payments.jobs import process_payment
from payments.states import PaymentStatus
from tests.factories import UserFactory


@pytest.fixture
def ledger_finance(db):
    user = UserFactory(username="fern-finance", roles=["Finance"])
    ensure_ledger_roles()
    return user


@pytest.fixture
def ledger_approver(db):
    user = UserFactory(username="abel-approver", roles=["Approvers"])
    ensure_ledger_roles()
    return user


@pytest.fixture
def captured(make_payment):
    """A payment taken through the real services and the simulated gateway to succeeded."""

    def make(amount_minor=100_00, currency="EUR", **kwargs):
        payment = make_payment(amount_minor=amount_minor, currency=currency, **kwargs)
        process_payment(payment.pk)
        payment.refresh_from_db()
        assert payment.status == PaymentStatus.SUCCEEDED
        return payment

    return make


def run_refund_jobs(refund):
    for job in Job.objects.filter(
        func=payment_services.REFUND_JOB, kwargs__refund_id=refund.pk, status=JobStatus.PENDING
    ):
        run_job(str(job.pk))
    refund.refresh_from_db()
    return refund


def balances(merchant, currency="EUR") -> dict[str, int]:
    return dict(Account.objects.filter(merchant=merchant, currency=currency).values_list("kind", "balance_minor"))


@pytest.fixture
def merchant_client(merchant):
    """A logged-in member of `merchant` in the portal."""
    from django.test import Client

    from payments.models import Membership

    user = UserFactory(username="mina-member", is_staff=False)
    Membership.objects.create(user=user, merchant=merchant, role=Membership.Role.MEMBER)
    client = Client()
    client.force_login(user)
    return client
