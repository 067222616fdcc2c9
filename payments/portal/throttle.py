"""The portal's login throttle: failed log-ins counted in the shared cache, per username and
client address, and per address alone (many usernames from one place). Once over the limit a
log-in is refused without checking the password, until the window since the first failure ends."""

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


def _counters(username: str, address: str) -> list[tuple[str, int]]:
    who = hashlib.sha256(username.strip().casefold().encode()).hexdigest()[:32]
    return [
        (f"merchant-login-failures:{who}:{address}", FAILURES_PER_USERNAME_AND_ADDRESS),
        (f"merchant-login-failures:{address}", FAILURES_PER_ADDRESS),
    ]


def login_blocked(username: str, address: str) -> bool:
    counters = _counters(username, address)
    try:
        counts = cache.get_many([key for key, _ in counters])
    except (RedisError, OSError):
        # Failing open keeps merchants able to log in while Redis is down; say so loudly.
        logger.exception("login throttle unavailable: cache unreachable")
        return False
    return any(counts.get(key, 0) >= limit for key, limit in counters)


def login_failed(username: str, address: str) -> None:
    try:
        for key, _ in _counters(username, address):
            cache.add(key, 0, timeout=WINDOW_SECONDS)  # the window starts at the first failure
            cache.incr(key)
    except (RedisError, OSError, ValueError):
        logger.exception("login throttle unavailable: failure not counted")


def login_succeeded(username: str, address: str) -> None:
    try:
        cache.delete(_counters(username, address)[0][0])
    except (RedisError, OSError):
        logger.exception("login throttle unavailable: counter not reset")
