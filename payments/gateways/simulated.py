"""The simulated gateway: deterministic by token, with its own ledger keyed by idempotency key.

tok_success  approved
tok_decline  declined with a code
tok_timeout  the charge goes through but the call times out (-> unknown; lookup finds it)
tok_error    server error before anything is recorded (-> unknown; lookup finds nothing)
tok_unreachable  no answer to the charge nor to any lookup (-> unknown, then needs review)
tok_crash    the call raises (a bug, not an answer) the first PAYMENTS_SIMULATED_CRASHES times
             under a key, so the job fails for real and a person can requeue it
Any other token is declined as invalid.
Refunds: see SimulatedGateway.refund (outcome by the amount's last three digits).
"""

import secrets
import time

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q

from payments.gateways.base import (
    ChargeRequest,
    ChargeResult,
    GatewayOutcome,
    LookupResult,
    RefundRequest,
    RefundResult,
)

TOKENS = ("tok_success", "tok_decline", "tok_timeout", "tok_error", "tok_unreachable", "tok_crash")


NO_ANSWER = "No answer from the gateway in time."


class SimulatedCrash(RuntimeError):
    """What tok_crash raises: an unexpected fault inside the job, not a processor answer."""


class SimulatedGateway:
    def _sleep(self, fraction: float) -> None:
        latency = settings.PAYMENTS_GATEWAY_LATENCY_MS
        if latency:
            time.sleep(latency * fraction / 1000)

    def charge(self, request: ChargeRequest) -> ChargeResult:

        started = time.monotonic()
        self._sleep(0.5)
        if request.payment_method == "tok_crash":
            self._crash_unless_done(request.idempotency_key)
        if request.payment_method == "tok_unreachable":
            self._mark(f"{request.idempotency_key}:unreachable", request)
        if request.payment_method in ("tok_error", "tok_unreachable"):
            self._sleep(0.5)
            return ChargeResult(
                outcome=GatewayOutcome.UNKNOWN,
                error_code="gateway_error",
                error_message="The gateway answered 502 Bad Gateway.",
                latency_ms=_ms_since(started),
            )
        record = self._record(request)
        self._sleep(0.5)
        if request.payment_method == "tok_timeout":
            return ChargeResult(
                outcome=GatewayOutcome.UNKNOWN,
                error_code="timeout",
                error_message="No answer from the gateway in time.",
                latency_ms=_ms_since(started),
            )
        return ChargeResult(
            outcome=GatewayOutcome.SUCCEEDED if record.approved else GatewayOutcome.DECLINED,
            gateway_reference=record.reference,
            error_code=record.decline_code,
            error_message=_decline_message(record.decline_code),
            latency_ms=_ms_since(started),
        )

    def refund(self, request: RefundRequest) -> RefundResult:
        """Refund part of a charge. Outcome by the amount's last three digits, like a test
        card: ...013 declined, ...014 recorded then timed out on the first call, ...015 a 502 on the first
        call under a key (nothing recorded), then normal. A repeat under the same key
        returns the first answer and never refunds twice."""
        from payments.models import SimulatedGatewayRecord

        self._sleep(0.5)
        magic = request.amount_minor % 1000
        if (
            magic == 15
            and not SimulatedGatewayRecord.objects.filter(
                idempotency_key=f"{request.idempotency_key}:error-seen"
            ).exists()
        ):
            self._store(
                idempotency_key=f"{request.idempotency_key}:error-seen",
                kind="marker",
                token="",
                amount_minor=request.amount_minor,
                currency=request.currency,
                approved=False,
                decline_code="gateway_error",
            )
            return RefundResult(
                outcome=GatewayOutcome.UNKNOWN,
                error_code="gateway_error",
                error_message="The gateway answered 502 Bad Gateway.",
            )
        charge = SimulatedGatewayRecord.objects.filter(
            kind="charge", reference=request.charge_reference, approved=True
        ).first()
        refunded = sum(
            SimulatedGatewayRecord.objects.filter(kind="refund", token=request.charge_reference, approved=True)
            .exclude(idempotency_key=request.idempotency_key)
            .values_list("amount_minor", flat=True)
        )
        if charge is None:
            decline = "no_such_charge"
        elif refunded + request.amount_minor > charge.amount_minor:
            decline = "amount_exceeds_charge"
        elif magic == 13:
            decline = "refund_declined"
        else:
            decline = ""
        first_call = not SimulatedGatewayRecord.objects.filter(idempotency_key=request.idempotency_key).exists()
        record = self._store(
            idempotency_key=request.idempotency_key,
            kind="refund",
            token=request.charge_reference,
            amount_minor=request.amount_minor,
            currency=request.currency,
            approved=not decline,
            decline_code=decline,
        )
        self._sleep(0.5)
        if (magic == 14 and first_call) or magic in (16, 17):
            return RefundResult(
                outcome=GatewayOutcome.UNKNOWN,
                error_code="timeout",
                error_message="No answer from the gateway in time.",
            )
        return RefundResult(
            outcome=GatewayOutcome.SUCCEEDED if record.approved else GatewayOutcome.DECLINED,
            gateway_reference=record.reference,
            error_code=record.decline_code,
            error_message=_decline_message(record.decline_code),
        )

    def lookup(self, idempotency_key: str) -> LookupResult:
        from payments.models import SimulatedGatewayRecord

        if SimulatedGatewayRecord.objects.filter(idempotency_key=f"{idempotency_key}:unreachable").exists():
            return LookupResult(
                outcome=GatewayOutcome.UNKNOWN,
                error_code="timeout",
                error_message="No answer from the gateway in time.",
            )
        record = SimulatedGatewayRecord.objects.filter(idempotency_key=idempotency_key).first()
        if record is None:
            return LookupResult(outcome=GatewayOutcome.NOT_FOUND)
        if record.kind == "refund" and record.amount_minor % 1000 == 17:
            return LookupResult(
                outcome=GatewayOutcome.UNKNOWN,
                error_code="timeout",
                error_message="No answer from the gateway in time.",
            )
        return LookupResult(
            outcome=GatewayOutcome.SUCCEEDED if record.approved else GatewayOutcome.DECLINED,
            gateway_reference=record.reference,
            error_code=record.decline_code,
            error_message=_decline_message(record.decline_code),
        )

    def _record(self, request: ChargeRequest):
        """The charge under this key: the existing one if any, so a repeat never charges twice."""
        approved = request.payment_method in ("tok_success", "tok_timeout", "tok_crash")
        decline_code = (
            ""
            if approved
            else ("card_declined" if request.payment_method == "tok_decline" else "invalid_payment_method")
        )
        return self._store(
            idempotency_key=request.idempotency_key,
            kind="charge",
            token=request.payment_method,
            amount_minor=request.amount_minor,
            currency=request.currency,
            approved=approved,
            decline_code=decline_code,
        )

    def knows(self, idempotency_key: str) -> bool:
        """True if this gateway holds anything under the key (a charge, a marker, a crash)."""
        from payments.models import SimulatedGatewayRecord

        return SimulatedGatewayRecord.objects.filter(
            Q(idempotency_key=idempotency_key) | Q(idempotency_key__startswith=f"{idempotency_key}:")
        ).exists()

    def knows_charge(self, reference: str) -> bool:
        from payments.models import SimulatedGatewayRecord

        return SimulatedGatewayRecord.objects.filter(kind="charge", reference=reference).exists()

    def _mark(self, idempotency_key: str, request: ChargeRequest) -> None:
        self._store(
            idempotency_key=idempotency_key,
            kind="marker",
            token=request.payment_method,
            amount_minor=request.amount_minor,
            currency=request.currency,
            approved=False,
        )

    def _crash_unless_done(self, idempotency_key: str) -> None:
        from payments.models import SimulatedGatewayRecord

        crashes = SimulatedGatewayRecord.objects.filter(idempotency_key__startswith=f"{idempotency_key}:crash-").count()
        if crashes < settings.PAYMENTS_SIMULATED_CRASHES:
            SimulatedGatewayRecord.objects.create(
                idempotency_key=f"{idempotency_key}:crash-{crashes + 1}",
                reference=f"sim_crash_{secrets.token_hex(10)}",
                kind="marker",
                token="tok_crash",
                amount_minor=0,
                currency="",
                approved=False,
            )
            raise SimulatedCrash(
                f"simulated processor client crash {crashes + 1} of {settings.PAYMENTS_SIMULATED_CRASHES}"
            )

    def _store(self, *, idempotency_key: str, **fields):
        """Insert the record under this key unless one exists; return the one that stands."""
        from payments.models import SimulatedGatewayRecord

        existing = SimulatedGatewayRecord.objects.filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing
        prefix = "sim_re_" if fields["kind"] == "refund" else "sim_ch_"
        try:
            with transaction.atomic():
                return SimulatedGatewayRecord.objects.create(
                    idempotency_key=idempotency_key, reference=prefix + secrets.token_hex(10), **fields
                )
        except IntegrityError:  # the same key sent at the same moment elsewhere
            return SimulatedGatewayRecord.objects.get(idempotency_key=idempotency_key)


def _decline_message(code: str) -> str:
    return {
        "": "",
        "card_declined": "The card was declined by the issuer.",
        "invalid_payment_method": "The payment method token is not valid.",
        "refund_declined": "The processor declined the refund.",
        "no_such_charge": "The processor has no captured charge with this reference.",
        "amount_exceeds_charge": "The refund would exceed what was charged.",
    }[code]


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
