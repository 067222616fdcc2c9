"""The portal's money pages and the ledger's admin."""

import csv
import io

import pytest
from django.urls import reverse

from ledger import services
from ledger.models import CapturedFunds, DriftCheck, Payout, Price, Transaction
from ledger.states import Cause, PayoutStatus
from tests.factories import MerchantFactory, UserFactory
from tests.ledger.conftest import balances

pytestmark = pytest.mark.django_db


def test_portal_balance_shows_pending_available_and_fee_and_net_per_payment(merchant_client, merchant, captured):
    Price.objects.create(merchant=merchant, currency="EUR", rate_bps=200, fixed_minor=30)
    payment = captured(amount_minor=100_00)
    services.adjustment_post(merchant=merchant, currency="EUR", amount_minor=-5_00, reason="r", idempotency_key="neg")
    page = merchant_client.get(reverse("merchant_ledger:balance")).content.decode()
    assert "97.70 EUR" in page and "-5.00 EUR" in page  # pending net; available shown negative
    assert payment.public_id in page and "2.30 EUR" in page  # the payment's fee
    detail = merchant_client.get(reverse("merchant:payment", args=[payment.public_id])).content.decode()
    assert "Fee and net" in detail and "2.00 % + 0.30 EUR" in detail and "97.70 EUR" in detail


def test_the_statement_lists_every_entry_and_downloads_as_csv(merchant_client, merchant, captured):
    payment = captured(amount_minor=100_00)
    response = merchant_client.get(reverse("merchant_ledger:statement"), {"currency": "EUR"})
    assert response.status_code == 200 and payment.public_id in response.content.decode()
    download = merchant_client.get(reverse("merchant_ledger:statement_csv"), {"currency": "EUR"})
    rows = list(csv.DictReader(io.StringIO(b"".join(download.streaming_content).decode())))
    funds = CapturedFunds.objects.get()
    assert [(r["account"], int(r["amount_minor"]), r["cause"], r["payment"]) for r in rows] == [
        ("pending", funds.net_minor, Cause.CAPTURE, payment.public_id)
    ]
    assert merchant_client.get(reverse("merchant_ledger:statement"), {"currency": "USD"}).status_code == 404


def test_other_merchants_money_never_shows(merchant_client, make_payment, captured):
    other = MerchantFactory(name="Other Shop", slug="other-shop")
    theirs = captured(merchant=other, amount_minor=77_77)
    services.payouts_run_daily()
    for name in ("balance", "payouts", "statement"):
        page = merchant_client.get(reverse(f"merchant_ledger:{name}")).content.decode()
        assert theirs.public_id not in page and "77.77" not in page


def test_portal_payouts_page_lists_the_merchants_payouts(merchant_client, merchant):
    services.adjustment_post(merchant=merchant, currency="EUR", amount_minor=42_00, reason="r", idempotency_key="a")
    [payout] = services.payouts_run_daily()
    page = merchant_client.get(reverse("merchant_ledger:payouts")).content.decode()
    assert payout.public_id in page and "42.00 EUR" in page


def test_the_portal_money_pages_need_a_membership(client, admin_user):
    assert client.get(reverse("merchant_ledger:balance")).status_code == 302
    client.force_login(admin_user)  # staff, but no membership: nothing in the portal
    assert client.get(reverse("merchant_ledger:statement")).status_code == 403


def test_admin_shows_accounts_transactions_with_entries_payouts_and_drift_checks(admin_client, merchant, captured):
    payment = captured()
    posted = Transaction.objects.get(payment=payment)
    page = admin_client.get(reverse("admin:ledger_transaction_change", args=[posted.pk])).content.decode()
    assert "Processor receivable" in page and "-100.00 EUR" in page
    accounts = admin_client.get(reverse("admin:ledger_account_changelist"), {"q": merchant.name})
    assert accounts.status_code == 200 and "Pending" in accounts.content.decode()
    assert admin_client.post(reverse("admin:ledger_driftcheck_run")).status_code == 302
    assert DriftCheck.objects.get().is_clean
    assert admin_client.get(reverse("admin:ledger_driftcheck_changelist")).status_code == 200
    for name in ("entry", "payout", "price", "merchantterms", "capturedfunds"):
        assert admin_client.get(reverse(f"admin:ledger_{name}_changelist")).status_code == 200


def test_finance_pays_out_from_the_admin_and_an_approver_approves(
    client, merchant, ledger_finance, ledger_approver, settings
):
    settings.LEDGER_PAYOUT_APPROVAL_THRESHOLD = {"EUR": "100"}
    services.adjustment_post(merchant=merchant, currency="EUR", amount_minor=300_00, reason="r", idempotency_key="a")
    client.force_login(ledger_finance)
    form = {
        "merchant": merchant.pk,
        "currency": "EUR",
        "amount": "",
        "reason": "asked by phone",
        "idempotency_key": "f1",
    }
    response = client.post(reverse("admin:ledger_payout_add"), form)
    assert response.status_code == 302, response.content.decode()[:2000]
    client.post(reverse("admin:ledger_payout_add"), form)  # a double submit
    payout = Payout.objects.get()
    assert payout.status == PayoutStatus.REQUESTED and payout.amount_minor == 300_00
    client.force_login(ledger_approver)
    changelist = reverse("admin:ledger_payout_changelist")
    client.post(changelist, {"action": "approve", "_selected_action": [payout.pk], "post": "yes", "note": "ok"})
    payout.refresh_from_db()
    assert payout.status == PayoutStatus.PENDING and balances(merchant)["payouts_in_transit"] == 300_00


def test_viewers_cannot_pay_out_or_run_the_drift_check(client, merchant):
    viewer = UserFactory(username="vera-viewer", roles=["Viewers"])
    client.force_login(viewer)
    assert client.get(reverse("admin:ledger_payout_add")).status_code == 403
    assert client.post(reverse("admin:ledger_driftcheck_run")).status_code == 403
