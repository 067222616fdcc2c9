from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError

from backoffice.models import AuditEntry, Job
from backoffice.runner import run_job
from reconciliation.matching import match_day
from reconciliation.models import Discrepancy, DiscrepancyStatus, LineOutcome, SettlementLine
from reconciliation.selectors import day_report
from reconciliation.services import (
    discrepancy_accept,
    discrepancy_link,
    discrepancy_request_settlement,
    matching_enqueue,
)
from tests.reconciliation.conftest import PROCESSOR, ingest
from tests.reconciliation.daygen import HEADER, found_discrepancies

pytestmark = pytest.mark.needs_postgres


def test_every_injected_discrepancy_is_found_with_its_class_and_nothing_else(make_day, settings):
    settings.RECONCILIATION_CHUNK_LINES = 3000  # several chunks
    generated = make_day(payments=10_000, per_kind=5)

    ingest(generated.csv_bytes)
    progress = match_day(processor=PROCESSOR, day=generated.day)

    found = found_discrepancies(Discrepancy.objects.filter(status=DiscrepancyStatus.OPEN))
    injected = generated.all_injected()
    assert {kind for kind, _ in injected} == {
        "amount_mismatch",
        "status_mismatch",
        "fee_mismatch",
        "missing_ours",
        "missing_theirs",
        "duplicate",
    }
    assert found - injected == set(), "flagged but not injected (precision)"
    assert injected - found == set(), "injected but not found (recall)"
    assert progress.done == progress.total == generated.lines
    # Every line has a class; everything not flagged is matched.
    assert not SettlementLine.objects.filter(outcome=LineOutcome.UNMATCHED).exists()
    flagged_lines = Discrepancy.objects.filter(line__isnull=False).count()
    assert SettlementLine.objects.filter(outcome=LineOutcome.MATCHED).count() == generated.lines - flagged_lines


def test_payouts_of_what_the_processor_really_moved_match_our_records(make_day):
    # The processor service computes payouts before its lies: the lines do not add up to
    # them, our records do.
    generated = make_day(payments=200, per_kind=2, true_payouts=True)
    ingest(generated.csv_bytes)

    match_day(processor=PROCESSOR, day=generated.day)

    assert found_discrepancies(_open()) == generated.all_injected()
    assert set(SettlementLine.objects.filter(line_type="payout").values_list("outcome", flat=True)) == {"matched"}


def _open():
    return Discrepancy.objects.filter(status=DiscrepancyStatus.OPEN)


def test_matching_the_day_again_changes_nothing(make_day):
    generated = make_day(payments=200, per_kind=2)
    ingest(generated.csv_bytes)
    match_day(processor=PROCESSOR, day=generated.day)
    before = set(Discrepancy.objects.values_list("id", "kind", "status"))

    ingest(generated.csv_bytes)  # the same file again
    match_day(processor=PROCESSOR, day=generated.day)

    assert set(Discrepancy.objects.values_list("id", "kind", "status")) == before
    assert found_discrepancies(_open()) == generated.all_injected()


def test_a_resolution_survives_a_re_run(make_day, finance):
    generated = make_day(payments=200, per_kind=2)
    ingest(generated.csv_bytes)
    match_day(processor=PROCESSOR, day=generated.day)
    accepted = _open().filter(kind="fee_mismatch").first()
    missing = _open().filter(kind="missing_ours").first()
    discrepancy_accept(discrepancy=accepted, actor=finance, reason="the processor's fee promotion")
    discrepancy_accept(discrepancy=missing, actor=finance, reason="test charge of the processor")

    match_day(processor=PROCESSOR, day=generated.day)

    accepted.refresh_from_db()
    missing.refresh_from_db()
    assert (accepted.status, accepted.resolution, accepted.resolved_by) == ("resolved", "accepted", finance)
    assert (missing.status, missing.resolution) == ("resolved", "accepted")
    assert found_discrepancies(_open()) == generated.all_injected() - found_discrepancies(
        Discrepancy.objects.filter(pk__in=[accepted.pk, missing.pk])
    )
    assert AuditEntry.objects.filter(action="discrepancy_accepted").count() == 2


def test_linking_a_line_to_the_right_record_keeps_the_link_on_re_runs(make_day, finance, make_payment):
    generated = make_day(payments=200, per_kind=2)
    ingest(generated.csv_bytes)
    match_day(processor=PROCESSOR, day=generated.day)
    entry = _open().filter(kind="missing_ours").first()
    # The charge was ours after all, under a key the processor mangled.
    payment = make_payment(amount_minor=entry.line.amount_minor, currency=entry.line.currency)
    attempt = payment.attempts.create(number=1, idempotency_key=f"{payment.public_id}_a1", outcome="succeeded")

    discrepancy_link(discrepancy=entry, actor=finance, record_key=payment.public_id, reason="key mangled")
    match_day(processor=PROCESSOR, day=generated.day)

    entry.refresh_from_db()
    assert (entry.status, entry.resolution) == ("resolved", "linked")
    line = SettlementLine.objects.get(pk=entry.line_id)
    assert line.linked_by_hand and line.payment_attempt == attempt
    assert AuditEntry.objects.filter(action="discrepancy_linked", object_id=str(entry.pk)).exists()


def test_records_missing_from_their_report_wait_for_the_delay(make_day, settings):
    settings.RECONCILIATION_MISSING_AFTER_HOURS = 24 * 30
    generated = make_day(payments=200, per_kind=2)
    ingest(generated.csv_bytes)

    match_day(processor=PROCESSOR, day=generated.day)

    assert not Discrepancy.objects.filter(kind="missing_theirs").exists()
    assert found_discrepancies(_open()) == {
        (kind, identity) for kind, identity in generated.all_injected() if kind != "missing_theirs"
    }
    report = day_report(processor=PROCESSOR, day=generated.day)
    waiting = [row for row in report.rows if row.category.startswith("not in their report yet")]
    assert sum(row.count for row in waiting) == len(generated.injected["missing_theirs"])


def test_a_record_missing_on_its_day_is_cleared_when_the_next_day_reports_it(make_day, past_day):
    generated = make_day(payments=200, per_kind=2)
    ingest(generated.csv_bytes)
    match_day(processor=PROCESSOR, day=generated.day)
    entry = _open().filter(kind="missing_theirs", payment_attempt__isnull=False).first()
    attempt = entry.payment_attempt
    next_day = past_day + timedelta(days=1)
    late = (
        ",".join(HEADER)
        + f"\nsl_late,charge,{attempt.gateway_reference},{attempt.idempotency_key},,"
        + f"{attempt.payment.amount_minor},{attempt.payment.currency},{next_day}T00:00:00.5Z\n"
    )
    ingest(late.encode())

    match_day(processor=PROCESSOR, day=next_day)

    entry.refresh_from_db()
    assert entry.status == "cleared"
    assert SettlementLine.objects.get(line_id="sl_late").outcome == "matched"


def test_a_capture_of_an_unknown_payment_is_settled_with_four_eyes(make_day, finance):
    from payments.services.settlements import settlement_approve
    from tests.factories import UserFactory

    generated = make_day(payments=200, per_kind=2)
    ingest(generated.csv_bytes)
    match_day(processor=PROCESSOR, day=generated.day)
    entry = next(e for e in _open().filter(kind="status_mismatch") if e.payment_attempt.payment.status == "unknown")
    finance.groups.add(*Group.objects.filter(name="Operators"))

    request = discrepancy_request_settlement(discrepancy=entry, actor=finance, reason="their report shows it")

    payment = entry.payment_attempt.payment
    payment.refresh_from_db()
    assert payment.status == "unknown"  # nothing changes before a second person approves
    assert request.gateway_reference == entry.line.processor_reference
    with pytest.raises(ValidationError):
        settlement_approve(settlement=request, approver=finance)
    approver = UserFactory(username="alex-approver", roles=["Approvers"])
    settlement_approve(settlement=request, approver=approver)
    match_day(processor=PROCESSOR, day=generated.day)

    entry.refresh_from_db()
    payment.refresh_from_db()
    assert payment.status == "succeeded"
    assert entry.status == "cleared"
    assert entry.line.__class__.objects.get(pk=entry.line_id).outcome == "matched"


def test_the_job_matches_the_day_and_records_the_run(make_day):
    generated = make_day(payments=200, per_kind=2)
    ingest(generated.csv_bytes)
    run = matching_enqueue(processor=PROCESSOR, day=generated.day)
    again = matching_enqueue(processor=PROCESSOR, day=generated.day)
    assert again == run  # one run per day at a time

    run_job(str(run.job_id))  # what a worker runs

    run.refresh_from_db()
    job = Job.objects.get(pk=run.job_id)
    assert job.status == "succeeded"
    assert job.result == run.summary == {"lines": generated.lines, "open": len(generated.all_injected())}
    # The job's page shows the progress bar from these.
    assert job.progress_total == job.progress_done == generated.lines
    assert run.finished_at is not None
    assert found_discrepancies(_open()) == generated.all_injected()
