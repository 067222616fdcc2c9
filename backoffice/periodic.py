"""Periodic jobs any app can add from its `AppConfig.ready()` (so backoffice never imports the
apps that depend on it); the sweeper process (`manage.py run_sweeper`) runs each at its
interval after its passes. Each must be safe to run twice at once."""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from croniter import croniter  # type: ignore[import-untyped]  # (no stubs; it comes with rq)
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone


@dataclass(frozen=True)
class Periodic:
    func: Callable
    interval_seconds: int
    name: str
    kwargs: dict = field(default_factory=dict)


_periodic: dict[str, Periodic] = {}


def register_periodic(func: Callable, *, interval_seconds: int, name: str, kwargs: dict | None = None) -> None:
    _periodic[name] = Periodic(func=func, interval_seconds=interval_seconds, name=name, kwargs=kwargs or {})


def registered_periodic() -> list[Periodic]:
    return sorted(_periodic.values(), key=lambda periodic: periodic.name)


class CronSchedule:
    """A periodic function run once per slot of a cron expression (Django's time zone): register
    it with a short interval and the sweeper's call runs the function on its first call after
    each slot passes. Like rq's cron, a slot that passed before this process started is not
    caught up (a daily payout must not run at 01:00 because the process started then)."""

    def __init__(self, func: Callable, cron: str):
        if not croniter.is_valid(cron):
            raise ImproperlyConfigured(f"{cron!r} is not a cron expression (for {func.__name__}).")
        self.func, self.cron = func, cron
        self.__name__ = func.__name__
        self._last_slot: datetime | None = None

    def forget_last_slot(self) -> None:
        self._last_slot = None

    def __call__(self, **kwargs):
        slot = croniter(self.cron, timezone.localtime()).get_prev(datetime)
        previous, self._last_slot = self._last_slot, slot
        if previous is None or slot <= previous:
            return None
        return self.func(**kwargs)
