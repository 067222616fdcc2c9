import django_rq
import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from payments.models import Merchant, Payment, Refund
from payments.states import PaymentStatus

pytestmark = pytest.mark.django_db


def test_seed_demo_once_gives_every_state_and_a_login_per_role(capsys, settings, tmp_path):
    settings.RUN_DIR = tmp_path
    call_command("seed_demo", "--once")
    printed = capsys.readouterr().out
    assert Merchant.objects.count() == 3
    assert 190 <= Payment.objects.count() <= 210
    statuses = set(Payment.objects.values_list("status", flat=True))
    assert statuses == set(PaymentStatus.values)
    assert Refund.objects.filter(status="requested").exists()
    logins = (tmp_path / "demo-logins.txt").read_text()
    assert (tmp_path / "demo-logins.txt").stat().st_mode & 0o077 == 0
    for username in ("admin", "operator", "finance", "approver", "viewer", "fjord-owner", "fjord-member"):
        assert username in printed and username in logins
        assert get_user_model().objects.filter(username=username).exists()
    owner = get_user_model().objects.get(username="fjord-owner").merchant_memberships.get()
    assert owner.is_owner and owner.merchant.slug == "fjord-coffee"
    assert not get_user_model().objects.get(username="fjord-member").merchant_memberships.get().is_owner

    call_command("seed_demo", "--once")
    assert "already present" in capsys.readouterr().out
    assert Merchant.objects.count() == 3 and 190 <= Payment.objects.count() <= 210


@pytest.mark.django_db(transaction=True)
def test_seed_demo_with_a_live_redis_processes_the_jobs_redis_took(capsys, settings, tmp_path):
    # Committed for real, so each job is pushed to the live Redis on commit and is `queued`
    # when the seed runs it (the bug: the seed ran only `pending` jobs and then retried a
    # payment that was still pending).
    settings.RUN_DIR = tmp_path
    call_command("seed_demo")

    assert django_rq.get_queue("payments").count > 0  # Redis did take the pushes
    assert set(Payment.objects.values_list("status", flat=True)) == set(PaymentStatus.values)
    assert Refund.objects.filter(status="succeeded").count() == 15
