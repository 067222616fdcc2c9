"""Session limits: a staff session ends after SESSION_STAFF_MAX_SECONDS in all and after
SESSION_STAFF_IDLE_SECONDS without a request; a merchant's after SESSION_MERCHANT_MAX_SECONDS
and SESSION_MERCHANT_IDLE_SECONDS. The times live in the session itself (server side)."""

import time

from django.conf import settings
from django.contrib.auth import logout
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver

STARTED_KEY = "paydesk_session_started_at"
SEEN_KEY = "paydesk_session_seen_at"
# Stamping every request would write the session row on every page view; a minute is precise enough.
SEEN_RESOLUTION_SECONDS = 60


def session_limits(user) -> tuple[int, int]:
    """(most seconds in all, most seconds idle) for this user's sessions."""
    if user.is_staff:
        return settings.SESSION_STAFF_MAX_SECONDS, settings.SESSION_STAFF_IDLE_SECONDS
    return settings.SESSION_MERCHANT_MAX_SECONDS, settings.SESSION_MERCHANT_IDLE_SECONDS


@receiver(user_logged_in, dispatch_uid="paydesk_session_started")
def _stamp_session_start(sender, request, user, **kwargs):
    if request is not None and hasattr(request, "session"):
        now = int(time.time())
        request.session[STARTED_KEY] = now
        request.session[SEEN_KEY] = now


class SessionLimitsMiddleware:
    """After AuthenticationMiddleware: logs out a session past its limits before the view runs."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            now = int(time.time())
            started = request.session.setdefault(STARTED_KEY, now)
            seen = request.session.get(SEEN_KEY, now)
            most, idle = session_limits(user)
            if now - started >= most or now - seen >= idle:
                logout(request)
            elif now - seen >= SEEN_RESOLUTION_SECONDS or SEEN_KEY not in request.session:
                request.session[SEEN_KEY] = now
        return self.get_response(request)
