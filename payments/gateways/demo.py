"""`make run`'s gateway: the configured processor (PAYMENTS_DEMO_INNER_GATEWAY, the HTTP
processor service by default) for everything, except two demo tokens answered in process by
the simulated gateway, so the demo always has something only a person can finish:

tok_unreachable  no answer to the charge nor to any lookup: unknown, then needs review
tok_crash        the call raises PAYMENTS_SIMULATED_CRASHES times, so its job fails for real;
                 a requeue then charges it

Development only: production configures a real processor directly.
"""

from django.conf import settings
from django.utils.module_loading import import_string

from payments.gateways.base import ChargeRequest, ChargeResult, LookupResult, RefundRequest, RefundResult
from payments.gateways.simulated import SimulatedGateway

LOCAL_TOKENS = ("tok_unreachable", "tok_crash")


class DemoGateway:
    def __init__(self):
        self.inner = import_string(settings.PAYMENTS_DEMO_INNER_GATEWAY)()
        self.local = SimulatedGateway()

    def charge(self, request: ChargeRequest) -> ChargeResult:
        gateway = self.local if request.payment_method in LOCAL_TOKENS else self.inner
        return gateway.charge(request)

    def lookup(self, idempotency_key: str) -> LookupResult:
        if self.local.knows(idempotency_key):
            return self.local.lookup(idempotency_key)
        return self.inner.lookup(idempotency_key)

    def refund(self, request: RefundRequest) -> RefundResult:
        if self.local.knows_charge(request.charge_reference):
            return self.local.refund(request)
        return self.inner.refund(request)
