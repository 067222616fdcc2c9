"""Live status in the admin: list pages and object pages show statuses that update without a
reload while work is in flight (backoffice/static/backoffice/live_status.js polls
/admin/live-status/). Each app registers how to read its kinds of objects:

    register_live("payment", read=payment_statuses, permission="payments.view_payment")

`read(ids)` returns {id: LiveStatus} for the ids that exist.
"""

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from django.http import JsonResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

MAX_OBJECTS = 200


@dataclass(frozen=True)
class LiveStatus:
    status: str
    label: str
    moving: bool  # may still change on its own: keep polling
    token: str = ""  # changes whenever the object's page would show something new


@dataclass(frozen=True)
class LiveKind:
    read: Callable[[list[str]], dict[str, LiveStatus]]
    permission: str


_kinds: dict[str, LiveKind] = {}


def register_live(kind: str, *, read: Callable[[list[str]], dict[str, LiveStatus]], permission: str) -> None:
    _kinds[kind] = LiveKind(read=read, permission=permission)


def live_status_html(kind: str, object_id, live: LiveStatus, *, reload_on_change: bool = False) -> str:
    """The status as the admin shows it, marked for live_status.js while it may change; with
    `reload_on_change`, the page reloads when the object changes."""
    if not live.moving:
        return format_html('<span class="live-status status-{}">{}</span>', live.status, live.label)
    return format_html(
        '<span class="live-status status-{}" data-live="{}:{}" data-live-url="{}" data-live-token="{}"{}>{}</span>',
        live.status,
        kind,
        object_id,
        reverse("live_status"),
        live.token or live.status,
        mark_safe(" data-live-reload") if reload_on_change else "",  # noqa: S308 - a constant
        live.label,
    )


@never_cache
@require_GET
def live_status_view(request):
    """{"payment:12": {"status", "label", "moving", "token"}, ...} for the objects asked
    (`?o=payment:12&o=job:<uuid>`) that exist and the user may view; others are absent."""
    wanted: dict[str, list[str]] = {}
    for item in request.GET.getlist("o")[:MAX_OBJECTS]:
        kind, _, object_id = item.partition(":")
        if kind in _kinds and object_id:
            wanted.setdefault(kind, []).append(object_id)
    answer = {}
    for kind, ids in wanted.items():
        if not request.user.has_perm(_kinds[kind].permission):
            continue
        for object_id, live in _kinds[kind].read(_valid(ids)).items():
            answer[f"{kind}:{object_id}"] = asdict(live)
    return JsonResponse({"objects": answer})


def _valid(ids: Iterable[str]) -> list[str]:
    return [object_id for object_id in ids if len(object_id) <= 64 and object_id.replace("-", "").isalnum()]
