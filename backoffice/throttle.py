"""The login throttle of the merchant portal and the staff admin: failed log-ins counted in the
shared cache, per username and client address, and per address alone (many usernames from one
place). Once over the limit a log-in is refused without checking the password, until the window
since the first failure ends. Each login page counts in its own scope."""

import hashlib
import logging

from django.core.cache import cache
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 15 * 60
FAILURES_PER_USERNAME_AND_ADDRESS = 5
FAILURES_PER_ADDRESS = 30


def client_address(request) -> str:
    # REMOTE_ADDR only: X-Forwarded-For is whatever the client says unless a trusted proxy sets it.
    return request.META.get("REMOTE_ADDR", "") if request is not None else ""


def _counters(username: str, address: str, scope: str) -> list[tuple[str, int]]:
    who = hashlib.sha256(username.strip().casefold().encode()).hexdigest()[:32]
    return [
        (f"{scope}-login-failures:{who}:{address}", FAILURES_PER_USERNAME_AND_ADDRESS),
        (f"{scope}-login-failures:{address}", FAILURES_PER_ADDRESS),
    ]


def login_blocked(username: str, address: str, scope: str = "merchant") -> bool:
    counters = _counters(username, address, scope)
    try:
        counts = cache.get_many([key for key, _ in counters])
    except (RedisError, OSError):
        # Failing open keeps merchants able to log in while Redis is down; say so loudly.
        logger.exception("login throttle unavailable: cache unreachable")
        return False
    return any(counts.get(key, 0) >= limit for key, limit in counters)


def login_failed(username: str, address: str, scope: str = "merchant") -> None:
    try:
        for key, _ in _counters(username, address, scope):
            cache.add(key, 0, timeout=WINDOW_SECONDS)  # the window starts at the first failure
            cache.incr(key)
    except (RedisError, OSError, ValueError):
        logger.exception("login throttle unavailable: failure not counted")


def login_succeeded(username: str, address: str, scope: str = "merchant") -> None:
    try:
        cache.delete(_counters(username, address, scope)[0][0])
    except (RedisError, OSError):
        logger.exception("login throttle unavailable: counter not reset")


class ThrottledLoginMixin:
    """For an AuthenticationForm: refuse without checking the password once over the limit,
    count failures, reset on success. Set `throttle_scope` and an error message "throttled"."""

    throttle_scope = "merchant"

    def clean(self):
        from django.core.exceptions import ValidationError

        username = self.cleaned_data.get("username") or ""
        address = client_address(self.request)
        if login_blocked(username, address, self.throttle_scope):
            raise ValidationError(self.error_messages["throttled"], code="throttled")
        try:
            cleaned_data = super().clean()
        except ValidationError:
            if username:
                login_failed(username, address, self.throttle_scope)
            raise
        login_succeeded(username, address, self.throttle_scope)
        return cleaned_data
