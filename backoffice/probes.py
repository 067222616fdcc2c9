"""Probes for load balancers, orchestrators and Prometheus.

/healthz   the process answers (no database, no Redis): restart it if this fails.
/readyz    PostgreSQL, Redis, a live worker and a recent sweep, each with its details;
           503 when any fails. Stop routing to it / alert.
/metrics   Prometheus text format; only with the bearer token or from an allowed network.
"""

import hmac
import ipaddress
import time

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, HttpResponseForbidden, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from backoffice import health
from backoffice.health import RedisUnavailable, last_sweep_at, sweep_overdue_after_seconds, workers
from backoffice.metrics import metrics_registry


@never_cache
@require_GET
def healthz(request):
    return JsonResponse({"status": "ok"})


def _timed(check) -> dict:
    started = time.monotonic()
    try:
        ok, detail = check()
    except Exception as error:  # a probe reports every failure; it never raises
        ok, detail = False, f"{type(error).__name__}: {error}"
    return {"ok": ok, "detail": detail, "ms": round((time.monotonic() - started) * 1000, 1)}


def _database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return True, connection.vendor


def _redis():
    try:
        health.redis_connection().ping()
    except (RedisError, OSError) as error:
        return False, str(error)
    return True, "PONG"


def _workers():
    try:
        alive = workers()
    except RedisUnavailable as error:
        return False, f"cannot list workers: {error}"
    if not alive:
        return False, "no worker registered in Redis"
    return True, f"{len(alive)} alive: " + ", ".join(worker.name for worker in alive[:10])


def _sweeper():
    try:
        swept_at = last_sweep_at()
    except RedisUnavailable as error:
        return False, f"cannot read the last sweep: {error}"
    if swept_at is None:
        return False, "never ran (is the sweeper process running?)"
    age = (timezone.now() - swept_at).total_seconds()
    if age > sweep_overdue_after_seconds():
        return False, f"last ran {age:.0f} s ago (every {settings.JOBS_SWEEP_INTERVAL_SECONDS} s expected)"
    return True, f"last ran {age:.0f} s ago"


CHECKS = {"database": _database, "redis": _redis, "workers": _workers, "sweeper": _sweeper}


@never_cache
@require_GET
def readyz(request):
    checks = {name: _timed(check) for name, check in CHECKS.items()}
    ready = all(check["ok"] for check in checks.values())
    return JsonResponse({"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)


def _allowed(request) -> bool:
    token = settings.PAYDESK_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer ") and hmac.compare_digest(header[7:].encode(), token.encode()):
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in network for network in settings.PAYDESK_METRICS_ALLOWED_NETWORKS)


@never_cache
@require_GET
def metrics(request):
    if not _allowed(request):
        return HttpResponseForbidden(
            "Metrics need the bearer token or an allowed address.\n", content_type="text/plain"
        )
    return HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)
