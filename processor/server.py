"""The processor's HTTP API (aiohttp). Outcomes by token and refund amount, as the in-process
simulated gateway (payments/gateways/simulated.py):

tok_success  approved            tok_decline  declined (card_declined)
tok_timeout  recorded, then no answer in time (the client's read timeout; a lookup finds it)
tok_error    503 before anything is recorded (a lookup finds nothing)
other tokens declined (invalid_payment_method)
Refund amounts ending in ...013 are declined, ...014 recorded then no answer on the first call,
...015 a 503 on the first call under a key (nothing recorded), then normal, ...016 recorded then
no answer on any call (a lookup finds it), ...017 the same and lookups of it answer 503.
"""

import asyncio
import json
import logging
import random
import re
from datetime import date

from aiohttp import web

from processor.config import Behaviour, fee_minor
from processor.report import render_csv, report_lines
from processor.store import Store

logger = logging.getLogger("processor")

TOKEN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{2,63}$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
BEHAVIOUR = web.AppKey("behaviour", Behaviour)
STORE = web.AppKey("store", Store)


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str):
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


async def _latency(behaviour: Behaviour, fraction: float) -> None:
    latency = behaviour.latency_ms
    if behaviour.jitter_ms:
        latency = max(0.0, latency + random.uniform(-behaviour.jitter_ms, behaviour.jitter_ms))
    if latency:
        await asyncio.sleep(latency * fraction / 1000)


async def _hang(behaviour: Behaviour) -> web.Response:
    """No answer in time: hold the request past any client's read timeout."""
    await asyncio.sleep(behaviour.hang_seconds)
    return _error(504, "timeout", "The processor took too long.")


async def _body(request: web.Request) -> tuple[str, dict]:
    key = request.headers.get("Idempotency-Key", "")
    if not KEY.match(key):
        raise Refused(400, "idempotency_key_required", "An Idempotency-Key header of 1 to 200 characters is required.")
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Refused(400, "invalid_json", "The body must be a JSON object.")
    if not isinstance(body, dict):
        raise Refused(400, "invalid_json", "The body must be a JSON object.")
    amount = body.get("amount_minor")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise Refused(400, "invalid_amount", "amount_minor must be a whole number of minor units above zero.")
    if not isinstance(body.get("currency"), str) or not CURRENCY.match(body["currency"]):
        raise Refused(400, "invalid_currency", "currency must be an ISO 4217 code in upper case.")
    return key, body


def _conflict(existing, fingerprint: str) -> None:
    if existing is not None and existing.fingerprint != fingerprint:
        raise Refused(409, "idempotency_key_reused", "This Idempotency-Key was used with different parameters.")


def _chaos(behaviour: Behaviour) -> str:
    roll = random.random()
    if roll < behaviour.error_rate:
        return "error"
    if roll < behaviour.error_rate + behaviour.timeout_rate:
        return "timeout"
    return ""


def _refusing(handler):
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Refused as refused:
            return _error(refused.status, refused.code, refused.message)

    return wrapped


@_refusing
async def charge(request: web.Request) -> web.StreamResponse:
    behaviour, store = request.app[BEHAVIOUR], request.app[STORE]
    key, body = await _body(request)
    method = body.get("payment_method")
    if not isinstance(method, str) or not TOKEN.match(method):
        # Never echoed back: it might be a card number.
        raise Refused(400, "invalid_payment_method", "payment_method must be a payment method token.")
    fingerprint = f"charge|{body['amount_minor']}|{body['currency']}|{method}"
    _conflict(store.get(key), fingerprint)
    chaos = _chaos(behaviour)
    await _latency(behaviour, 0.5)
    if method == "tok_error" or chaos == "error":
        await _latency(behaviour, 0.5)
        return _error(503, "processor_error", "The processor could not handle the request.")
    _conflict(store.get(key), fingerprint)  # the same key may have arrived while we slept
    approved = method in ("tok_success", "tok_timeout")
    decline = "" if approved else ("card_declined" if method == "tok_decline" else "invalid_payment_method")
    operation = store.record(
        idempotency_key=key,
        kind="charge",
        fingerprint=fingerprint,
        payment_method=method,
        amount_minor=body["amount_minor"],
        currency=body["currency"],
        approved=approved,
        decline_code=decline,
        fee_minor=fee_minor(body["amount_minor"], bps=behaviour.fee_bps, fixed_minor=behaviour.fee_fixed_minor),
    )
    await _latency(behaviour, 0.5)
    if method == "tok_timeout" or chaos == "timeout":
        return await _hang(behaviour)
    return web.json_response(operation.answer())


@_refusing
async def refund(request: web.Request) -> web.StreamResponse:
    behaviour, store = request.app[BEHAVIOUR], request.app[STORE]
    key, body = await _body(request)
    charge_reference = body.get("charge")
    if not isinstance(charge_reference, str) or not charge_reference:
        raise Refused(400, "invalid_charge", "charge must be the processor's reference of the charge.")
    fingerprint = f"refund|{body['amount_minor']}|{body['currency']}|{charge_reference}"
    _conflict(store.get(key), fingerprint)
    chaos = _chaos(behaviour)
    await _latency(behaviour, 0.5)
    magic = body["amount_minor"] % 1000
    if chaos == "error" or (magic == 15 and store.mark_once(f"{key}:error-seen")):
        return _error(503, "processor_error", "The processor could not handle the request.")
    _conflict(store.get(key), fingerprint)
    first_call = store.get(key) is None
    captured = store.charge_by_reference(charge_reference)
    if captured is None or not captured.approved:
        decline = "no_such_charge"
    elif store.refunded_minor(charge_reference, except_key=key) + body["amount_minor"] > captured.amount_minor:
        decline = "amount_exceeds_charge"
    elif magic == 13:
        decline = "refund_declined"
    else:
        decline = ""
    operation = store.record(
        idempotency_key=key,
        kind="refund",
        fingerprint=fingerprint,
        charge_reference=charge_reference,
        amount_minor=body["amount_minor"],
        currency=body["currency"],
        approved=not decline,
        decline_code=decline,
    )
    await _latency(behaviour, 0.5)
    if (magic == 14 and first_call) or magic in (16, 17) or chaos == "timeout":
        return await _hang(behaviour)
    return web.json_response(operation.answer())


async def lookup(request: web.Request) -> web.StreamResponse:
    """What happened under an idempotency key: the charge or refund, or 404."""
    behaviour, store = request.app[BEHAVIOUR], request.app[STORE]
    chaos = _chaos(behaviour)
    await _latency(behaviour, 1.0)
    if chaos == "error":
        return _error(503, "processor_error", "The processor could not handle the request.")
    if chaos == "timeout":
        return await _hang(behaviour)
    operation = store.get(request.match_info["key"])
    if operation is None:
        return _error(404, "not_found", "No charge or refund under this Idempotency-Key.")
    if operation.kind == "refund" and operation.amount_minor % 1000 == 17:
        return _error(503, "processor_error", "The processor could not handle the request.")
    return web.json_response(operation.answer())


async def operations(request: web.Request) -> web.StreamResponse:
    """Every operation whose key starts with ?key_prefix= (for tests and operators)."""
    prefix = request.query.get("key_prefix", "")
    if not prefix:
        return _error(400, "key_prefix_required", "Give ?key_prefix=.")
    found = request.app[STORE].by_prefix(prefix)
    return web.json_response(
        {
            "operations": [
                {
                    **op.answer(),
                    "idempotency_key": op.idempotency_key,
                    "charge": op.charge_reference,
                    "payment_method": op.payment_method,
                    "occurred_at": op.occurred_at,
                }
                for op in found
            ]
        }
    )


def _day(request: web.Request) -> str:
    day = request.match_info["day"]
    try:
        date.fromisoformat(day)
    except ValueError:
        raise web.HTTPNotFound(text="No such day.")
    return day


async def settlement_report(request: web.Request) -> web.StreamResponse:
    behaviour = request.app[BEHAVIOUR]
    lines, _ = report_lines(request.app[STORE], _day(request), behaviour.report_lies, behaviour.report_seed)
    return web.Response(text=render_csv(lines), content_type="text/csv", charset="utf-8")


async def settlement_injected(request: web.Request) -> web.StreamResponse:
    behaviour, day = request.app[BEHAVIOUR], _day(request)
    _, injected = report_lines(request.app[STORE], day, behaviour.report_lies, behaviour.report_seed)
    return web.json_response({"day": day, "requested": behaviour.report_lies, "injected": injected})


async def health(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


def make_app(behaviour: Behaviour) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[BEHAVIOUR] = behaviour
    app[STORE] = Store(behaviour.db_path)

    async def close_store(app: web.Application) -> None:
        app[STORE].close()

    app.on_cleanup.append(close_store)
    app.router.add_post("/v1/charges", charge)
    app.router.add_post("/v1/refunds", refund)
    app.router.add_get("/v1/operations/{key}", lookup)
    app.router.add_get("/v1/operations", operations)
    app.router.add_get(r"/v1/settlements/{day:\d{4}-\d{2}-\d{2}}.csv", settlement_report)
    app.router.add_get(r"/v1/settlements/{day:\d{4}-\d{2}-\d{2}}/injected.json", settlement_injected)
    app.router.add_get("/health", health)
    return app
