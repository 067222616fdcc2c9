"""The processor reached over HTTP (the `processor` service, or any processor speaking its API).

Two clients share one mapping of answers to outcomes:
- `HttpGateway`, the `Gateway` for one call at a time (jobs that charge, refund or look up one
  payment): a requests session per thread with pooled keep-alive connections;
- `AsyncProcessorClient`, for many calls in flight from one process (payments.batch): one
  aiohttp `ClientSession` over a `TCPConnector(limit=PAYMENTS_PROCESSOR_MAX_CONNECTIONS)`.

Anything but a clear answer is `unknown`: a connect or read timeout, a refused connection, a
5xx, a body we cannot read. The request may have reached the processor, so the caller never
retries under a new key; it looks the key up, or retries under the same key.
"""

import os
import threading
import time
from typing import TYPE_CHECKING
from urllib.parse import quote

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter

if TYPE_CHECKING:  # for the annotations only: the code imports these where it first uses them
    import asyncio

    import aiohttp

from payments.gateways.base import (
    ChargeRequest,
    ChargeResult,
    GatewayOutcome,
    LookupResult,
    RefundRequest,
    RefundResult,
)

UNCLEAR = {
    "timeout": "No answer from the processor in time.",
    "connection_error": "The connection to the processor failed.",
    "gateway_error": "The processor answered with a server error.",
    "bad_answer": "The processor's answer could not be read.",
}


def _unclear(code: str, detail: str = "") -> dict:
    message = UNCLEAR[code] + (f" ({detail})" if detail else "")
    return {"outcome": GatewayOutcome.UNKNOWN, "error_code": code, "error_message": message[:255]}


def _charge_body(request: ChargeRequest) -> dict:
    return {
        "amount_minor": request.amount_minor,
        "currency": request.currency,
        "payment_method": request.payment_method,
        "reference": request.reference,
    }


def _refund_body(request: RefundRequest) -> dict:
    return {"charge": request.charge_reference, "amount_minor": request.amount_minor, "currency": request.currency}


def _answer(status: int, body, *, lookup: bool = False) -> dict:
    """The outcome fields for an HTTP answer: 200 succeeded/declined, 404 on a lookup
    not_found, 400/402/422 a refusal (nothing was recorded), anything else unknown."""
    error = body.get("error", {}) if isinstance(body, dict) and isinstance(body.get("error"), dict) else {}
    if status == 200 and isinstance(body, dict) and body.get("status") in ("succeeded", "declined"):
        succeeded = body["status"] == "succeeded"
        return {
            "outcome": GatewayOutcome.SUCCEEDED if succeeded else GatewayOutcome.DECLINED,
            "gateway_reference": str(body.get("id", ""))[:100],
            "error_code": "" if succeeded else str(body.get("decline_code", ""))[:50],
            "error_message": "" if succeeded else str(body.get("message", ""))[:255],
        }
    if lookup and status == 404:
        return {"outcome": GatewayOutcome.NOT_FOUND}
    if status in (400, 402, 422):
        return {
            "outcome": GatewayOutcome.DECLINED,
            "error_code": str(error.get("code", "invalid_request"))[:50],
            "error_message": str(error.get("message", "The processor refused the request."))[:255],
        }
    if status == 200 or status >= 500:
        return _unclear("gateway_error" if status >= 500 else "bad_answer", f"HTTP {status}")
    # 409 (the key was used with other parameters) and other surprises: we cannot tell what
    # the processor holds under this key.
    return _unclear("bad_answer", f"HTTP {status} {error.get('code', '')}".strip())


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def processor_url(path: str) -> str:
    return settings.PAYMENTS_PROCESSOR_URL.rstrip("/") + path


def lookup_path(idempotency_key: str) -> str:
    return "/v1/operations/" + quote(idempotency_key, safe="")


class HttpGateway:
    """The Gateway interface over HTTP, one call at a time, with pooled connections."""

    def __init__(self):
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=4, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
        return session

    def _call(self, method: str, path: str, *, key: str = "", body: dict | None = None, lookup: bool = False):
        timeout = (
            settings.PAYMENTS_PROCESSOR_CONNECT_TIMEOUT_SECONDS,
            settings.PAYMENTS_PROCESSOR_READ_TIMEOUT_SECONDS,
        )
        try:
            response = self._session().request(
                method,
                processor_url(path),
                json=body,
                headers={"Idempotency-Key": key} if key else {},
                timeout=timeout,
                allow_redirects=False,
            )
        except requests.Timeout:
            return _unclear("timeout")
        except requests.RequestException as error:
            return _unclear("connection_error", type(error).__name__)
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
        return _answer(response.status_code, parsed, lookup=lookup)

    def charge(self, request: ChargeRequest) -> ChargeResult:
        started = time.monotonic()
        fields = self._call("POST", "/v1/charges", key=request.idempotency_key, body=_charge_body(request))
        return ChargeResult(**fields, latency_ms=_ms_since(started))

    def refund(self, request: RefundRequest) -> RefundResult:
        return RefundResult(
            **self._call("POST", "/v1/refunds", key=request.idempotency_key, body=_refund_body(request))
        )

    def lookup(self, idempotency_key: str) -> LookupResult:
        return LookupResult(**self._call("GET", lookup_path(idempotency_key), lookup=True))

    def submit_charge(self, request: ChargeRequest):
        """Many charges in flight: a concurrent.futures.Future of the ChargeResult (payments.batch)."""
        return submit_charge_http(request)


class AsyncProcessorClient:
    """Many calls in flight from one process: one aiohttp session, a bounded connection pool.
    Use inside a running event loop: `async with AsyncProcessorClient() as client: ...`."""

    def __init__(self, *, max_connections: int | None = None):
        self.max_connections = max_connections or settings.PAYMENTS_PROCESSOR_MAX_CONNECTIONS
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "AsyncProcessorClient":
        import aiohttp

        self._aiohttp = aiohttp
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.max_connections, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=settings.PAYMENTS_PROCESSOR_CONNECT_TIMEOUT_SECONDS,
                sock_read=settings.PAYMENTS_PROCESSOR_READ_TIMEOUT_SECONDS,
            ),
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.session is not None:
            await self.session.close()

    async def _call(self, method: str, path: str, *, key: str = "", body: dict | None = None, lookup: bool = False):
        if self.session is None:
            raise RuntimeError("AsyncProcessorClient is used inside `async with` only")
        aiohttp = self._aiohttp
        try:
            async with self.session.request(
                method,
                processor_url(path),
                json=body,
                headers={"Idempotency-Key": key} if key else {},
                allow_redirects=False,
            ) as response:
                try:
                    parsed = await response.json(content_type=None)
                except ValueError:
                    parsed = None
                return _answer(response.status, parsed, lookup=lookup)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            return _unclear("timeout")
        except aiohttp.ClientError as error:
            return _unclear("connection_error", type(error).__name__)

    async def charge(self, request: ChargeRequest) -> ChargeResult:
        started = time.monotonic()
        fields = await self._call("POST", "/v1/charges", key=request.idempotency_key, body=_charge_body(request))
        return ChargeResult(**fields, latency_ms=_ms_since(started))


class _CallLoop:
    """One event loop thread per process that runs the calls in flight, with one
    AsyncProcessorClient (one connection pool) reused for as long as the settings it was
    built from hold. Callers in other threads get concurrent.futures.Future objects, so the
    database work stays in the caller's (synchronous, Django) thread."""

    def __init__(self):
        self._reset()

    def _reset(self) -> None:
        self.lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.client: AsyncProcessorClient | None = None
        self.client_settings: tuple | None = None

    def _client_settings(self) -> tuple:
        return (
            settings.PAYMENTS_PROCESSOR_MAX_CONNECTIONS,
            settings.PAYMENTS_PROCESSOR_CONNECT_TIMEOUT_SECONDS,
            settings.PAYMENTS_PROCESSOR_READ_TIMEOUT_SECONDS,
        )

    def _ensure_loop(self):
        import asyncio

        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.loop = asyncio.new_event_loop()
                self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="processor-calls")
                self.thread.start()
                self.client = self.client_settings = None
            return self.loop

    async def _client(self, wanted: tuple) -> AsyncProcessorClient:
        # Runs in the loop's thread only: no lock needed around the swap.
        if self.client is None or self.client_settings != wanted:
            if self.client is not None:
                await self.client.__aexit__(None, None, None)
            self.client = await AsyncProcessorClient(max_connections=wanted[0]).__aenter__()
            self.client_settings = wanted
        return self.client

    def submit_charge(self, request: ChargeRequest):
        import asyncio

        wanted = self._client_settings()

        async def charge() -> ChargeResult:
            return await (await self._client(wanted)).charge(request)

        return asyncio.run_coroutine_threadsafe(charge(), self._ensure_loop())


_call_loop = _CallLoop()
# A forked child has no copy of the loop's thread; it starts its own.
os.register_at_fork(after_in_child=_call_loop._reset)


def submit_charge_http(request: ChargeRequest):
    """Start a charge on the process's call loop; a concurrent.futures.Future of its ChargeResult."""
    return _call_loop.submit_charge(request)
