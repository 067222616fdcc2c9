"""Writes of reconciliation: starting a matching run, and the people's resolutions of exceptions.

Matching itself lives in `reconciliation.matching` (set-based SQL), ingestion in
`reconciliation.ingest`. Every resolution locks its exception, refuses one that is no longer
open, and writes an audit entry in the same transaction.
"""

from datetime import date

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from backoffice.actors import Actor, actor_user
from backoffice.models import Job, JobStatus
from backoffice.services import audit_record, job_enqueue
from ledger.services import adjustment_post
from ledger.states import AccountKind
from payments.models import PaymentAttempt, Refund, SettlementRequest
from payments.money import currency_exponent, format_minor, major_to_minor
from payments.services.settlements import settlement_request
from payments.states import PaymentStatus
from reconciliation.formats import CHARGE, FEE, REFUND
from reconciliation.models import (
    AdjustmentDirection,
    AdjustmentRequest,
    AdjustmentStatus,
    Discrepancy,
    DiscrepancyKind,
    DiscrepancyStatus,
    MatchingRun,
    Resolution,
    SettlementLine,
)

MATCH_JOB = "reconciliation.jobs.match_processor_day"
ACTIVE = (JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.RETRYING)


class ReconciliationError(ValidationError):
    pass


def matching_enqueue(*, processor: str, day: date, requested_by: Actor = None) -> MatchingRun:
    """Queue a matching run for the day, in the caller's transaction; a run of the same day
    still waiting or running is returned instead of queuing a second."""
    with transaction.atomic():
        active = (
            MatchingRun.objects.select_for_update()
            .filter(processor=processor, day=day, job__status__in=ACTIVE)
            .select_related("job")
            .first()
        )
        if active is not None:
            return active
        run = MatchingRun.objects.create(processor=processor, day=day, requested_by=actor_user(requested_by))
        run.job = job_enqueue(
            func=MATCH_JOB,
            kwargs={"run_id": run.pk},
            queue="default",
            concerns=run,
            requested_by=requested_by,
            max_attempts=3,
        )
        run.save(update_fields=["job"])
    return run


def _require_reason(reason: str, what: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ReconciliationError({"reason": [f"A reason is required to {what}."]}, code="reason_required")
    return reason


def _require_perm(user: Actor, perm: str, what: str) -> User:
    """Refuse unless `user` is an active user with `perm`; the user, once it has it."""
    if not (isinstance(user, User) and user.pk and user.is_active and user.has_perm(perm)):
        raise ReconciliationError(f"You do not have permission to {what}.", code="permission_denied")
    return user


def _resolver(actor: Actor) -> User:
    return _require_perm(actor, "reconciliation.resolve_discrepancy", "resolve exceptions")


def _locked_open(discrepancy: Discrepancy) -> Discrepancy:
    """The exception, locked, once its resolver has the permission (`_resolver`); refused when not open."""
    discrepancy = Discrepancy.objects.select_for_update().get(pk=discrepancy.pk)
    if discrepancy.status != DiscrepancyStatus.OPEN:
        raise ReconciliationError(f"not open (it is {discrepancy.get_status_display().lower()})", code="not_open")
    return discrepancy


def _resolve(
    discrepancy: Discrepancy, *, actor: User, resolution: str, reason: str, details: dict[str, object]
) -> Discrepancy:
    discrepancy.status, discrepancy.resolution = DiscrepancyStatus.RESOLVED, resolution
    discrepancy.resolution_reason, discrepancy.resolved_by = reason, actor
    discrepancy.resolved_at = timezone.now()
    discrepancy.save()
    audit_record(
        actor=actor,
        action=f"discrepancy_{resolution}",
        target=discrepancy,
        reason=reason,
        details={"kind": discrepancy.kind, "day": str(discrepancy.day), **details},
    )
    return discrepancy


def discrepancy_accept(*, discrepancy: Discrepancy, actor: Actor, reason: str) -> Discrepancy:
    """Close an open exception as accepted, with the reason; audited. Money does not move."""
    reason = _require_reason(reason, "accept an exception")
    with transaction.atomic():
        resolver = _resolver(actor)
        discrepancy = _locked_open(discrepancy)
        return _resolve(discrepancy, actor=resolver, resolution=Resolution.ACCEPTED, reason=reason, details={})


def _record_by_key(key: str) -> PaymentAttempt | Refund:
    """A record of ours named by what staff can copy from its page: an attempt's idempotency
    key, a payment's public id (its last attempt), or a refund's public id."""
    key = (key or "").strip()
    attempt = PaymentAttempt.objects.filter(idempotency_key=key).first()
    if attempt is None and key.startswith("pay_"):
        attempt = PaymentAttempt.objects.filter(payment__public_id=key).order_by("-number").first()
    if attempt is not None:
        return attempt
    refund = Refund.objects.filter(public_id=key).first()
    if refund is not None:
        return refund
    raise ReconciliationError({"record": [f"No payment, attempt or refund {key[:100]!r}."]}, code="no_record")


def discrepancy_link(*, discrepancy: Discrepancy, actor: Actor, record_key: str, reason: str) -> Discrepancy:
    """Link the exception's report line to the right record of ours (or, for a record missing
    from their report, the record to the report line that is its): matching keeps the link
    on every re-run. Locks the exception and the line; audited."""
    reason = _require_reason(reason, "link a record")
    with transaction.atomic():
        resolver = _resolver(actor)
        discrepancy = _locked_open(discrepancy)
        if discrepancy.kind == DiscrepancyKind.MISSING_THEIRS:
            line = (
                SettlementLine.objects.select_for_update()
                .filter(processor=discrepancy.processor, line_id=(record_key or "").strip())
                .order_by("occurrence")
                .first()
            )
            if line is None:
                raise ReconciliationError({"record": ["No report line with this line id."]}, code="no_line")
            record = discrepancy.payment_attempt or discrepancy.refund
        else:
            if discrepancy.line_id is None:  # as .get(pk=None) would: only missing-theirs has no line
                raise SettlementLine.DoesNotExist("this exception has no report line")
            line = SettlementLine.objects.select_for_update().get(pk=discrepancy.line_id)
            record = _record_by_key(record_key)
        wanted = REFUND if isinstance(record, Refund) else (CHARGE, FEE)
        if line.line_type not in wanted:
            raise ReconciliationError(
                {"record": [f"A {line.line_type} line cannot be linked to a {type(record).__name__.lower()}."]},
                code="wrong_record",
            )
        if isinstance(record, Refund):
            line.refund, line.payment_attempt = record, None
        else:
            line.payment_attempt, line.refund = record, None
        line.linked_by_hand = True
        line.save(update_fields=["refund", "payment_attempt", "linked_by_hand"])
        return _resolve(
            discrepancy,
            actor=resolver,
            resolution=Resolution.LINKED,
            reason=reason,
            details={"line": line.line_id, "record": str(record)},
        )


def discrepancy_request_settlement(*, discrepancy: Discrepancy, actor: Actor, reason: str) -> SettlementRequest:
    """For a charge they captured while we say `unknown`: ask the usual four-eyes manual
    settlement to succeeded with their charge reference. The exception stays open until a
    second person approves and a re-run finds the charge matched."""
    reason = _require_reason(reason, "ask for a settlement")
    with transaction.atomic():
        _resolver(actor)
        discrepancy = _locked_open(discrepancy)
        line = discrepancy.line
        attempt = discrepancy.payment_attempt
        if (
            discrepancy.kind != DiscrepancyKind.STATUS_MISMATCH
            or line is None
            or line.line_type != CHARGE
            or attempt is None
            or attempt.payment.status != PaymentStatus.UNKNOWN
        ):
            raise ReconciliationError(
                "only a charge they captured while our payment is unknown is settled this way", code="not_settleable"
            )
        # One settlement per exception: asking again from the same entry finds the first.
        request, _ = settlement_request(
            payment=attempt.payment,
            settle_as=PaymentStatus.SUCCEEDED,
            reason=f"reconciliation {line.processor} {line.day}, line {line.line_id}: {reason}",
            requested_by=actor,
            gateway_reference=line.processor_reference,
            request_key=f"discrepancy:{discrepancy.pk}",
        )
        discrepancy.settlement_request = request
        discrepancy.save(update_fields=["settlement_request", "updated_at"])
        audit_record(
            actor=actor,
            action="discrepancy_settlement_requested",
            target=discrepancy,
            reason=reason,
            details={"payment": attempt.payment.public_id, "settlement_request": request.pk},
        )
    return request


def adjustment_approval_threshold_minor(currency: str) -> int:
    """The adjustment (minor units) at or above which a second person must approve."""
    thresholds = settings.RECONCILIATION_ADJUSTMENT_APPROVAL_THRESHOLD
    return major_to_minor(thresholds.get(currency, thresholds.get("default", "0")), currency)


def _adjustment_post(adjustment: AdjustmentRequest, *, actor: User) -> None:
    """Post the adjustment (the merchant's available balance, or the processor receivable when
    the exception has no merchant) and resolve its exception, in the caller's transaction. The
    ledger key is the request's, so the money moves once whatever repeats."""
    discrepancy = adjustment.discrepancy
    adjustment.ledger_transaction = adjustment_post(
        currency=adjustment.currency,
        amount_minor=adjustment.signed_amount_minor,
        reason=f"reconciliation {discrepancy}: {adjustment.reason}"[:255],
        idempotency_key=f"reconciliation-adjustment:{adjustment.request_key}",
        merchant=adjustment.merchant,
        account_kind=AccountKind.AVAILABLE if adjustment.merchant_id else AccountKind.PROCESSOR_RECEIVABLE,
        actor=actor,
    )
    adjustment.status = AdjustmentStatus.POSTED
    adjustment.save()
    _resolve(
        discrepancy,
        actor=actor,
        resolution=Resolution.ADJUSTED,
        reason=adjustment.reason,
        details={
            "adjustment": adjustment.pk,
            "ledger_transaction": adjustment.ledger_transaction_id,
            "amount_minor": adjustment.signed_amount_minor,
            "currency": adjustment.currency,
            "requested_by": str(adjustment.requested_by),
        },
    )


def _checked_amount(amount_minor: object, currency: str) -> int:
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int) or amount_minor <= 0:
        raise ReconciliationError(
            {"amount_minor": ["Give a positive whole number of minor units; the direction says which way."]},
            code="amount",
        )
    if amount_minor >= 10**15:
        raise ReconciliationError({"amount_minor": ["The amount is too large."]}, code="amount")
    try:
        currency_exponent(currency)
    except ValidationError:
        raise ReconciliationError({"currency": [f"{currency[:10]!r} is not a known currency."]}) from None
    return amount_minor


def adjustment_request(
    *, discrepancy: Discrepancy, actor: Actor, amount_minor: int, direction: str, reason: str, request_key: str
) -> AdjustmentRequest:
    """Resolve an open exception by a ledger adjustment. Below the approval threshold it is
    posted at once and the exception resolved; at or above it waits for a second person. Locks
    the exception; the same request key returns the first request (a double submit posts once)."""
    reason = _require_reason(reason, "adjust the ledger")
    request_key = (request_key or "").strip()
    if not request_key or len(request_key) > 100:
        raise ReconciliationError("The form's request key is missing: reload the page.", code="request_key")
    if direction not in AdjustmentDirection.values:
        raise ReconciliationError({"direction": ["Choose credit or debit."]}, code="direction")
    with transaction.atomic():
        requester = _resolver(actor)
        locked = Discrepancy.objects.select_for_update().get(pk=discrepancy.pk)
        existing = AdjustmentRequest.objects.filter(request_key=request_key).first()
        if existing is not None:
            return existing
        discrepancy = _locked_open(locked)
        amount_minor = _checked_amount(amount_minor, discrepancy.currency)
        if discrepancy.adjustments.filter(status=AdjustmentStatus.REQUESTED).exists():
            raise ReconciliationError("already has an adjustment awaiting approval", code="already_requested")
        needs_approval = amount_minor >= adjustment_approval_threshold_minor(discrepancy.currency)
        adjustment = AdjustmentRequest.objects.create(
            discrepancy=discrepancy,
            request_key=request_key,
            merchant_id=discrepancy.merchant_id,
            currency=discrepancy.currency,
            amount_minor=amount_minor,
            direction=direction,
            reason=reason,
            needs_approval=needs_approval,
            requested_by=requester,
        )
        audit_record(
            actor=requester,
            action="discrepancy_adjustment_requested",
            target=discrepancy,
            reason=reason,
            details={
                "adjustment": adjustment.pk,
                "amount": f"{adjustment.amount_display}",
                "needs_approval": needs_approval,
            },
        )
        if not needs_approval:
            _adjustment_post(adjustment, actor=requester)
    return adjustment


def _decider(approver: Actor, what: str) -> User:
    return _require_perm(approver, "reconciliation.approve_adjustment", what)


def _locked_for_second_person(adjustment: AdjustmentRequest, approver: User) -> AdjustmentRequest:
    """The adjustment, locked, once its decider has the permission (`_decider`): not the requester, still open."""
    adjustment = AdjustmentRequest.objects.select_for_update().get(pk=adjustment.pk)
    if adjustment.requested_by_id == approver.pk:
        raise ReconciliationError(
            "An adjustment this large needs a second person: you asked for this one.", code="four_eyes"
        )
    if adjustment.status != AdjustmentStatus.REQUESTED:
        raise ReconciliationError(
            f"not awaiting approval (it is {adjustment.get_status_display().lower()})", code="wrong_status"
        )
    return adjustment


def adjustment_approve(*, adjustment: AdjustmentRequest, approver: Actor, note: str = "") -> AdjustmentRequest:
    """A second person with approve_adjustment approves: the adjustment is posted and the
    exception resolved, if it is still open (a re-run may have cleared it meanwhile)."""
    with transaction.atomic():
        decider = _decider(approver, "approve adjustments")
        discrepancy = Discrepancy.objects.select_for_update().get(pk=adjustment.discrepancy_id)
        adjustment = _locked_for_second_person(adjustment, decider)
        if discrepancy.status != DiscrepancyStatus.OPEN:
            raise ReconciliationError(
                f"Its exception is not open any more (it is {discrepancy.get_status_display().lower()}): "
                "reject the adjustment.",
                code="not_open",
            )
        adjustment.discrepancy = discrepancy
        adjustment.decided_by, adjustment.decided_at = decider, timezone.now()
        adjustment.decision_note = (note or "").strip()
        audit_record(
            actor=approver,
            action="discrepancy_adjustment_approved",
            target=discrepancy,
            reason=adjustment.decision_note,
            details={"adjustment": adjustment.pk, "requested_by": str(adjustment.requested_by)},
        )
        _adjustment_post(adjustment, actor=decider)
    return adjustment


def adjustment_reject(*, adjustment: AdjustmentRequest, approver: Actor, note: str) -> AdjustmentRequest:
    """A second person rejects, with a required note: nothing is posted, the exception stays open."""
    note = _require_reason(note, "reject an adjustment")
    with transaction.atomic():
        decider = _decider(approver, "reject adjustments")
        adjustment = _locked_for_second_person(adjustment, decider)
        adjustment.status, adjustment.decided_by = AdjustmentStatus.REJECTED, decider
        adjustment.decided_at, adjustment.decision_note = timezone.now(), note
        adjustment.save()
        audit_record(
            actor=approver,
            action="discrepancy_adjustment_rejected",
            target=adjustment.discrepancy,
            reason=note,
            details={"adjustment": adjustment.pk, "amount": format_minor(adjustment.amount_minor, adjustment.currency)},
        )
    return adjustment


def active_matching_job(*, processor: str, day: date) -> Job | None:
    run = MatchingRun.objects.filter(processor=processor, day=day, job__status__in=ACTIVE).select_related("job").first()
    return run.job if run else None
