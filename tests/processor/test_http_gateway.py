"""payments.gateways.http against the real processor service: clear answers map to outcomes,
anything unclear (timeouts, refused connections, 5xx) is unknown, and the lookup finds what a
timed-out call recorded."""

import asyncio

import pytest

from payments.gateways import ChargeRequest, GatewayOutcome, RefundRequest
from payments.gateways.http import AsyncProcessorClient, HttpGateway
from processor.launch import free_port
from tests.helpers import run_coroutine


def request(key: str, token: str = "tok_success", amount: int = 1250) -> ChargeRequest:
    return ChargeRequest(idempotency_key=key, amount_minor=amount, currency="EUR", payment_method=token, reference="p")


@pytest.fixture
def gateway(http_processor):
    return HttpGateway()


def test_outcomes_over_http(gateway):
    success = gateway.charge(request("g-ok"))
    assert (success.outcome, success.gateway_reference[:3]) == (GatewayOutcome.SUCCEEDED, "ch_")
    assert gateway.charge(request("g-ok")).gateway_reference == success.gateway_reference
    declined = gateway.charge(request("g-no", "tok_decline"))
    assert (declined.outcome, declined.error_code) == (GatewayOutcome.DECLINED, "card_declined")
    assert declined.error_message == "The card was declined by the issuer."
    error = gateway.charge(request("g-err", "tok_error"))
    assert (error.outcome, error.error_code) == (GatewayOutcome.UNKNOWN, "gateway_error")
    assert gateway.lookup("g-err").outcome == GatewayOutcome.NOT_FOUND
    assert gateway.lookup("g-ok").gateway_reference == success.gateway_reference
    refund = gateway.refund(
        RefundRequest(
            idempotency_key="g-re", charge_reference=success.gateway_reference, amount_minor=50, currency="EUR"
        )
    )
    assert (refund.outcome, refund.gateway_reference[:3]) == (GatewayOutcome.SUCCEEDED, "rf_")


def test_a_read_timeout_is_unknown_and_the_lookup_finds_the_charge(gateway, settings):
    settings.PAYMENTS_PROCESSOR_READ_TIMEOUT_SECONDS = 1.0
    result = gateway.charge(request("g-slow", "tok_timeout"))
    assert (result.outcome, result.error_code) == (GatewayOutcome.UNKNOWN, "timeout")
    settings.PAYMENTS_PROCESSOR_READ_TIMEOUT_SECONDS = 10.0
    assert gateway.lookup("g-slow").outcome == GatewayOutcome.SUCCEEDED


def test_a_processor_that_is_down_gives_unknown_never_an_error(settings):
    settings.PAYMENTS_PROCESSOR_URL = f"http://127.0.0.1:{free_port()}"
    gateway = HttpGateway()
    assert gateway.charge(request("g-down")).outcome == GatewayOutcome.UNKNOWN
    assert gateway.charge(request("g-down")).error_code == "connection_error"
    assert gateway.lookup("g-down").outcome == GatewayOutcome.UNKNOWN


def test_the_async_client_gives_the_same_outcomes_many_at_once(http_processor, settings):
    settings.PAYMENTS_PROCESSOR_READ_TIMEOUT_SECONDS = 3.0  # honest answers on a busy machine; hangs last 20 s
    tokens = ["tok_success", "tok_decline", "tok_error", "tok_timeout"] * 10

    async def run():
        async with AsyncProcessorClient(max_connections=20) as client:
            return await asyncio.gather(*(client.charge(request(f"a-{n}", token)) for n, token in enumerate(tokens)))

    results = run_coroutine(run())
    expected = {
        "tok_success": GatewayOutcome.SUCCEEDED,
        "tok_decline": GatewayOutcome.DECLINED,
        "tok_error": GatewayOutcome.UNKNOWN,
        "tok_timeout": GatewayOutcome.UNKNOWN,
    }
    assert [result.outcome for result in results] == [expected[token] for token in tokens]
    assert {result.error_code for token, result in zip(tokens, results) if token == "tok_timeout"} == {"timeout"}
    assert len(http_processor.operations("a-")) == 30  # tok_error recorded nothing


def test_the_async_client_with_the_processor_down_gives_unknown(settings):
    settings.PAYMENTS_PROCESSOR_URL = f"http://127.0.0.1:{free_port()}"

    async def run():
        async with AsyncProcessorClient() as client:
            return await client.charge(request("a-down"))

    assert run_coroutine(run()).outcome == GatewayOutcome.UNKNOWN
