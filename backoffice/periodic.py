"""Periodic jobs any app can add from its `AppConfig.ready()` (so backoffice never imports the
apps that depend on it); the sweeper process (`manage.py run_sweeper`) runs each at its
interval after its passes. Each must be safe to run twice at once."""

from collections.abc import Callable
from dataclasses import dataclass, field


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
