from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class GatewayOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    # Timeout or server error: the charge may or may not have happened. Never assume.
    UNKNOWN = "unknown"
    # Only from a lookup: the gateway has no charge under that idempotency key.
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class ChargeRequest:
    idempotency_key: str
    amount_minor: int
    currency: str
    payment_method: str
    reference: str


@dataclass(frozen=True)
class ChargeResult:
    outcome: GatewayOutcome
    gateway_reference: str = ""
    error_code: str = ""
    error_message: str = ""
    latency_ms: int = 0


@dataclass(frozen=True)
class LookupResult:
    outcome: GatewayOutcome
    gateway_reference: str = ""
    error_code: str = ""
    error_message: str = ""


@dataclass(frozen=True)
class RefundRequest:
    idempotency_key: str
    charge_reference: str
    amount_minor: int
    currency: str


@dataclass(frozen=True)
class RefundResult:
    outcome: GatewayOutcome
    gateway_reference: str = ""
    error_code: str = ""
    error_message: str = ""


class Gateway(Protocol):
    """A payment processor. Every call carries an idempotency key; the same key twice
    must never move money twice."""

    def charge(self, request: ChargeRequest) -> ChargeResult: ...

    def refund(self, request: RefundRequest) -> RefundResult: ...

    def lookup(self, idempotency_key: str) -> LookupResult:
        """What happened to the charge or refund sent under this key."""
        ...
