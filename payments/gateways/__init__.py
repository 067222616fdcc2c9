"""Payment gateways: the interface, and loading the configured one by dotted path."""

from functools import cache

from django.conf import settings
from django.utils.module_loading import import_string

from payments.gateways.base import (
    ChargeRequest,
    ChargeResult,
    Gateway,
    GatewayOutcome,
    LookupResult,
    RefundRequest,
    RefundResult,
)

__all__ = [
    "ChargeRequest",
    "ChargeResult",
    "Gateway",
    "GatewayOutcome",
    "LookupResult",
    "RefundRequest",
    "RefundResult",
    "get_gateway",
]


@cache
def _load(path: str) -> Gateway:
    return import_string(path)()


def get_gateway() -> Gateway:
    return _load(settings.PAYMENTS_GATEWAY)
