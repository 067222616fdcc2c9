"""Riding out an outage of PostgreSQL or Redis in a long-lived process (worker, sweeper): one
log line when it starts, one when it ends, a growing wait between tries, never an exit."""

import logging
import time

from django.db import Error as DatabaseError
from django.db import connections
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

# What an unreachable dependency raises; other errors are bugs and stay loud.
REDIS_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


def database_unreachable(error: BaseException) -> bool:
    """True when the error means PostgreSQL cannot be reached (down, restarting, network),
    judged by asking it again on a fresh connection, not by the error's wording."""
    if not isinstance(error, DatabaseError):
        return False
    for db in connections.all(initialized_only=True):
        if not db.in_atomic_block:
            db.close()
    try:
        connections["default"].ensure_connection()
    except DatabaseError:
        return True
    return False


def describe(error: BaseException | str) -> str:
    """An error in one line: its type and the first line of its message."""
    if isinstance(error, str):
        return error
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


class Outage:
    """One dependency's outage as one process sees it."""

    def __init__(self, dependency: str, *, first_wait: float = 0.5, longest_wait: float = 30.0):
        self.dependency = dependency
        self.first_wait = first_wait
        self.longest_wait = longest_wait
        self.since: float | None = None
        self.tries = 0

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def failed(self, error: BaseException | str, doing: str) -> float:
        """Record a failed try; the seconds to wait before the next one."""
        if self.since is None:
            self.since = time.monotonic()
            logger.warning(
                "%s unreachable while %s (%s): waiting for it, retrying with back-off",
                self.dependency,
                doing,
                describe(error),
            )
        wait = min(self.longest_wait, self.first_wait * 2**self.tries)
        self.tries += 1
        return wait

    def ended(self) -> None:
        if self.since is not None:
            elapsed = time.monotonic() - self.since
            logger.warning("%s reachable again after %.1f s; carrying on", self.dependency, elapsed)
        self.since, self.tries = None, 0
