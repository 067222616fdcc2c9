"""The simulated gateway: deterministic by token, with its own ledger keyed by idempotency key.

tok_success  approved
tok_decline  declined with a code
tok_timeout  the charge goes through but the call times out (-> unknown; lookup finds it)
tok_error    server error before anything is recorded (-> unknown; lookup finds nothing)
Any other token is declined as invalid.
"""

import secrets
import time

from django.conf import settings
from django.db import IntegrityError, transaction

from payments.gateways.base import ChargeRequest, ChargeResult, GatewayOutcome, LookupResult

TOKENS = ("tok_success", "tok_decline", "tok_timeout", "tok_error")


class SimulatedGateway:
    def _sleep(self, fraction: float) -> None:
        latency = settings.PAYMENTS_GATEWAY_LATENCY_MS
        if latency:
            time.sleep(latency * fraction / 1000)

    def charge(self, request: ChargeRequest) -> ChargeResult:
        from payments.models import SimulatedGatewayRecord

        started = time.monotonic()
        self._sleep(0.5)
        if request.payment_method == "tok_error":
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

    def lookup(self, idempotency_key: str) -> LookupResult:
        from payments.models import SimulatedGatewayRecord

        record = SimulatedGatewayRecord.objects.filter(idempotency_key=idempotency_key).first()
        if record is None:
            return LookupResult(outcome=GatewayOutcome.NOT_FOUND)
        return LookupResult(
            outcome=GatewayOutcome.SUCCEEDED if record.approved else GatewayOutcome.DECLINED,
            gateway_reference=record.reference,
            error_code=record.decline_code,
            error_message=_decline_message(record.decline_code),
        )

    def _record(self, request: ChargeRequest):
        """The charge under this key: the existing one if any, so a repeat never charges twice."""
        from payments.models import SimulatedGatewayRecord

        existing = SimulatedGatewayRecord.objects.filter(idempotency_key=request.idempotency_key).first()
        if existing is not None:
            return existing
        approved = request.payment_method in ("tok_success", "tok_timeout")
        decline_code = "" if approved else (
            "card_declined" if request.payment_method == "tok_decline" else "invalid_payment_method"
        )
        try:
            with transaction.atomic():
                return SimulatedGatewayRecord.objects.create(
                    idempotency_key=request.idempotency_key,
                    kind="charge",
                    token=request.payment_method,
                    amount_minor=request.amount_minor,
                    currency=request.currency,
                    approved=approved,
                    decline_code=decline_code,
                    reference="sim_ch_" + secrets.token_hex(10),
                )
        except IntegrityError:  # the same key charged at the same moment elsewhere
            return SimulatedGatewayRecord.objects.get(idempotency_key=request.idempotency_key)


def _decline_message(code: str) -> str:
    return {
        "": "",
        "card_declined": "The card was declined by the issuer.",
        "invalid_payment_method": "The payment method token is not valid.",
    }[code]


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
