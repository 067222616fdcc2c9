"""Resolving an exception by a ledger adjustment: at once below the threshold, with a second
person above it; once per request key; never undone by a re-run of the day."""

import threading

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.db import close_old_connections
from django.urls import reverse

from backoffice.models import AuditEntry
from ledger.models import Account, Transaction
from reconciliation.matching import match_day
from reconciliation.models import AdjustmentRequest, Discrepancy
from reconciliation.services import adjustment_approve, adjustment_reject, adjustment_request
from tests.factories import UserFactory
from tests.helpers import logged_in, messages_of
from tests.reconciliation.conftest import PROCESSOR, ingest

pytestmark = pytest.mark.needs_postgres


@pytest.fixture
def matched_day(make_day, settings):
    settings.RECONCILIATION_ADJUSTMENT_APPROVAL_THRESHOLD = {"default": "100"}  # 100 EUR, 100 USD, 100 JPY
    generated = make_day(payments=200, per_kind=2)
    ingest(generated.csv_bytes)
    match_day(processor=PROCESSOR, day=generated.day)
    return generated


@pytest.fixture
def approver(db):
    return UserFactory(username="alex-approver", roles=["Approvers"])


def _open_with_merchant(kind="amount_mismatch") -> Discrepancy:
    return (
        Discrepancy.objects.filter(status="open", kind=kind, merchant__isnull=False, currency="EUR")
        .select_related("merchant")
        .first()
        or Discrepancy.objects.filter(status="open", merchant__isnull=False, currency="EUR").first()
    )


def _available(entry: Discrepancy) -> int:
    account = Account.objects.filter(merchant=entry.merchant, currency=entry.currency, kind="available").first()
    return account.balance_minor if account else 0


def test_below_the_threshold_the_adjustment_is_posted_at_once_and_resolves_the_exception(matched_day, finance):
    entry = _open_with_merchant()
    before = _available(entry)

    adjustment = adjustment_request(
        discrepancy=entry, actor=finance, amount_minor=250, direction="credit", reason="they paid 2.50 more",
        request_key="form-1",
    )  # fmt: skip

    entry.refresh_from_db()
    assert adjustment.status == "posted" and not adjustment.needs_approval
    assert (entry.status, entry.resolution, entry.resolved_by) == ("resolved", "adjusted", finance)
    posted = adjustment.ledger_transaction
    assert posted.cause == "adjustment" and posted.merchant_id == entry.merchant_id
    assert _available(entry) == before + 250
    assert list(entry.adjustments.all()) == [adjustment]  # linked from the exception
    actions = set(AuditEntry.objects.values_list("action", flat=True))
    assert {"discrepancy_adjustment_requested", "discrepancy_adjusted", "ledger_adjustment"} <= actions


def test_a_double_submit_posts_once(matched_day, finance):
    entry = _open_with_merchant()
    before = _available(entry)
    ask = dict(discrepancy=entry, actor=finance, amount_minor=300, direction="debit", reason="fee", request_key="k1")

    first = adjustment_request(**ask)
    second = adjustment_request(**ask)

    assert first == second
    assert AdjustmentRequest.objects.count() == 1
    assert Transaction.objects.filter(cause="adjustment").count() == 1
    assert _available(entry) == before - 300


@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_submits_of_one_form_post_once(make_day, settings):
    settings.RECONCILIATION_ADJUSTMENT_APPROVAL_THRESHOLD = {"default": "100"}
    generated = make_day(payments=100, per_kind=1)
    ingest(generated.csv_bytes)
    match_day(processor=PROCESSOR, day=generated.day)
    finance = UserFactory(username="fin-2", roles=["Finance"])
    # A transactional test's flush took the migrated role grants: give the one this test needs.
    finance.user_permissions.add(
        Permission.objects.get(content_type__app_label="reconciliation", codename="resolve_discrepancy")
    )
    entry = _open_with_merchant()
    results, barrier = [], threading.Barrier(2)

    def submit():
        barrier.wait()
        try:
            results.append(
                adjustment_request(
                    discrepancy=entry,
                    actor=finance,
                    amount_minor=120,
                    direction="credit",
                    reason="double click",
                    request_key="same-form",
                )  # fmt: skip
            )
        finally:
            close_old_connections()

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 2 and results[0].pk == results[1].pk
    assert Transaction.objects.filter(cause="adjustment").count() == 1


def test_above_the_threshold_a_second_person_approves_and_the_requester_cannot(matched_day, finance, approver):
    entry = _open_with_merchant()
    before = _available(entry)
    finance.groups.add(approver.groups.get())  # even with the permission, not one's own

    adjustment = adjustment_request(
        discrepancy=entry, actor=finance, amount_minor=10_000, direction="credit", reason="they captured 100 more",
        request_key="big",
    )  # fmt: skip

    entry.refresh_from_db()
    assert adjustment.status == "requested" and adjustment.needs_approval
    assert entry.status == "open" and _available(entry) == before
    assert not Transaction.objects.filter(cause="adjustment").exists()
    with pytest.raises(ValidationError, match="needs a second person"):
        adjustment_approve(adjustment=adjustment, approver=finance)
    with pytest.raises(ValidationError, match="permission"):
        adjustment_approve(adjustment=adjustment, approver=UserFactory(username="olga", roles=["Operators"]))

    adjustment_approve(adjustment=adjustment, approver=approver, note="checked with the processor")

    adjustment.refresh_from_db()
    entry.refresh_from_db()
    assert (adjustment.status, adjustment.decided_by) == ("posted", approver)
    assert (entry.status, entry.resolution) == ("resolved", "adjusted")
    assert _available(entry) == before + 10_000
    assert AuditEntry.objects.filter(action="discrepancy_adjustment_approved", object_id=str(entry.pk)).exists()


def test_a_rejected_adjustment_posts_nothing_and_leaves_the_exception_open(matched_day, finance, approver):
    entry = _open_with_merchant()
    adjustment = adjustment_request(
        discrepancy=entry, actor=finance, amount_minor=50_000, direction="debit", reason="x", request_key="r"
    )

    adjustment_reject(adjustment=adjustment, approver=approver, note="the processor corrected its report")

    entry.refresh_from_db()
    assert entry.status == "open"
    assert not Transaction.objects.filter(cause="adjustment").exists()
    with pytest.raises(ValidationError, match="not awaiting approval"):
        adjustment_approve(adjustment=adjustment, approver=approver)


def test_an_adjustment_survives_a_re_run_of_the_day(matched_day, finance):
    entry = _open_with_merchant()
    adjustment = adjustment_request(
        discrepancy=entry, actor=finance, amount_minor=99, direction="credit", reason="rounding", request_key="rr"
    )

    match_day(processor=PROCESSOR, day=matched_day.day)

    entry.refresh_from_db()
    assert (entry.status, entry.resolution) == ("resolved", "adjusted")
    assert Transaction.objects.filter(pk=adjustment.ledger_transaction_id).exists()


def test_bad_amounts_and_closed_exceptions_are_refused_and_change_nothing(matched_day, finance):
    entry = _open_with_merchant()
    for amount in (0, -5, "12", 1.5):
        with pytest.raises(ValidationError):
            adjustment_request(discrepancy=entry, actor=finance, amount_minor=amount, direction="credit",
                               reason="x", request_key=f"bad-{amount}")  # fmt: skip
    with pytest.raises(ValidationError, match="reason"):
        adjustment_request(discrepancy=entry, actor=finance, amount_minor=1, direction="credit", reason=" ",
                           request_key="no-reason")  # fmt: skip
    viewer = UserFactory(username="vera", roles=["Viewers"])
    with pytest.raises(ValidationError, match="permission"):
        adjustment_request(discrepancy=entry, actor=viewer, amount_minor=1, direction="credit", reason="x",
                           request_key="viewer")  # fmt: skip
    assert not AdjustmentRequest.objects.exists()
    adjustment_request(discrepancy=entry, actor=finance, amount_minor=1, direction="credit", reason="x",
                       request_key="ok")  # fmt: skip
    with pytest.raises(ValidationError, match="not open"):
        adjustment_request(discrepancy=entry, actor=finance, amount_minor=1, direction="credit", reason="x",
                           request_key="after")  # fmt: skip
    assert Transaction.objects.filter(cause="adjustment").count() == 1


def test_the_admin_form_posts_once_per_form_and_the_approver_approves_from_the_list(matched_day, finance, approver):
    entry = _open_with_merchant()
    client = logged_in(finance)
    url = reverse("admin:reconciliation_discrepancy_adjust", args=[entry.pk])
    key = client.get(url).context["form"]["request_key"].value()

    bad = client.post(url, {"direction": "credit", "amount": "1.234", "reason": "x", "request_key": key})
    assert "EUR has 2 decimal places" in str(bad.context["form"].errors["amount"])
    # A decimal comma is refused, not read as thousands (12,34 is not 1,234.00).
    comma = client.post(url, {"direction": "credit", "amount": "12,34", "reason": "x", "request_key": key})
    assert "Use a point for decimals" in str(comma.context["form"].errors["amount"])
    form = {"direction": "credit", "amount": "150.00", "reason": "they captured more", "request_key": key}
    first = client.post(url, form, follow=True)
    client.post(url, form, follow=True)  # the browser posts it again

    assert "awaits a second person's approval" in messages_of(first)[0]
    adjustment = AdjustmentRequest.objects.get()
    assert (adjustment.amount_minor, adjustment.status) == (15_000, "requested")
    page = client.get(reverse("admin:reconciliation_discrepancy_change", args=[entry.pk]))
    assert "150.00 EUR (awaiting approval)" in page.content.decode()

    changelist = reverse("admin:reconciliation_adjustmentrequest_changelist")
    approve = {"action": "approve", "_selected_action": [adjustment.pk], "post": "yes", "note": "ok"}
    refused = client.post(changelist, approve, follow=True)
    assert refused.status_code in (200, 403)
    adjustment.refresh_from_db()
    assert adjustment.status == "requested"
    logged_in(approver).post(changelist, approve, follow=True)

    adjustment.refresh_from_db()
    entry.refresh_from_db()
    assert adjustment.status == "posted" and entry.resolution == "adjusted"
    assert Transaction.objects.filter(cause="adjustment").count() == 1


def test_a_viewer_cannot_open_the_adjustment_form(matched_day):
    entry = _open_with_merchant()
    viewer = logged_in(UserFactory(username="vera-viewer", roles=["Viewers"]))
    assert viewer.get(reverse("admin:reconciliation_discrepancy_adjust", args=[entry.pk])).status_code == 403
