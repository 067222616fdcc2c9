"""A webhook receiver built into the development server, so webhooks can be tried on a laptop:
`/dev/webhooks/<merchant slug>/` accepts deliveries and checks their signature with the
endpoint's secrets; `/dev/webhooks/` (staff) shows the last ones. Both answer 404 unless DEBUG
is on; delivering to it needs WEBHOOKS_ALLOW_LOOPBACK, which `make run` sets and production
never does, so the SSRF guard in production is unchanged."""

import json
from functools import wraps

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from redis.exceptions import RedisError
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from backoffice.health import redis_connection
from notifications.models import WebhookEndpoint

RECEIVED_KEY = "paydesk:dev:webhooks"
KEEP = 50


def development_only(view):
    """404 unless DEBUG is on, checked at each request (production never has this page)."""

    @wraps(view)
    def guarded(request, *args, **kwargs):
        if not settings.DEBUG:
            raise Http404
        return view(request, *args, **kwargs)

    return guarded


def _verify(request, endpoints) -> tuple[bool, str]:
    headers = {name: request.headers.get(name, "") for name in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    if not endpoints:
        return False, "no endpoint has this URL"
    now = timezone.now()
    for endpoint in endpoints:
        for secret in endpoint.signing_secrets(now):
            try:
                Webhook(secret).verify(request.body, headers)
            except WebhookVerificationError:
                continue
            return True, f"signed by endpoint {endpoint.pk}'s secret"
    return False, "signature does not match any secret of the endpoint"


@development_only
@csrf_exempt
@require_POST
def receive(request, slug: str):
    url = request.build_absolute_uri()
    endpoints = list(WebhookEndpoint.objects.filter(url=url, merchant__slug=slug))
    verified, detail = _verify(request, endpoints)
    try:
        event_type = json.loads(request.body).get("type", "")
    except (ValueError, AttributeError):
        event_type = ""
    entry = {
        "received_at": timezone.now().isoformat(),
        "merchant": slug,
        "webhook_id": request.headers.get("webhook-id", ""),
        "event_type": event_type,
        "verified": verified,
        "detail": detail,
        "body": request.body[:2000].decode("utf-8", "replace"),
    }
    try:
        with redis_connection().pipeline() as pipeline:
            pipeline.lpush(RECEIVED_KEY, json.dumps(entry))
            pipeline.ltrim(RECEIVED_KEY, 0, KEEP - 1)
            pipeline.execute()
    except (RedisError, OSError):
        return HttpResponse("cannot store the delivery\n", status=503, content_type="text/plain")
    # Like a careful receiver: an unverified delivery is refused, so it shows as failed.
    return HttpResponse(
        "ok\n" if verified else f"{detail}\n", status=200 if verified else 400, content_type="text/plain"
    )


@development_only
@staff_member_required
@require_GET
def received(request):
    try:
        entries = [json.loads(raw) for raw in redis_connection().lrange(RECEIVED_KEY, 0, KEEP - 1)]
    except (RedisError, OSError) as error:
        entries, error_text = [], str(error)
    else:
        error_text = ""
    endpoints = WebhookEndpoint.objects.filter(url__contains="/dev/webhooks/").select_related("merchant")
    return render(
        request,
        "notifications/dev_receiver.html",
        {"entries": entries, "endpoints": endpoints, "error": error_text, "title": "Development webhook receiver"},
    )


urlpatterns = [
    path("", received, name="dev_webhooks"),
    path("<slug:slug>/", receive, name="dev_webhooks_receive"),
]
