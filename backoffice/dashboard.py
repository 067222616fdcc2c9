"""The admin's home page: a registry of cards each app contributes, and of "needs a person"
items. Backoffice knows no other app; payments, notifications (and later apps such as a
ledger or reconciliation) register theirs in `AppConfig.ready()`:

    from backoffice.dashboard import register_card, register_attention
    register_card(name="payments.figures", template="payments/dashboard/figures.html",
                  context=figures_context, order=20)
    register_attention(payments_attention)

A card's `context(request)` returns the template's context, or None when the signed-in staff
member has nothing to see or do there (that is how each role sees what it can act on).
Every figure on the page must come from pre-aggregated rows (`backoffice.Figure`), a capped
count on an index, or Redis: never a scan of a table that grows with volume.
"""

from collections.abc import Callable
from dataclasses import dataclass

from django.db.models import QuerySet
from django.http import HttpRequest

# Counts on the home page stop here: "1000+" tells a person as much as an exact number would,
# and the database stops reading after that many rows.
COUNT_CAP = 1000


@dataclass(frozen=True)
class Card:
    name: str
    template: str
    context: Callable[[HttpRequest], dict | None]
    order: int = 100
    wide: bool = False


@dataclass(frozen=True)
class AttentionItem:
    """Something waiting for a person, with the list that shows exactly those rows."""

    label: str
    count: int
    url: str
    capped: bool = False
    severity: str = "warning"  # "warning" or "error"

    @property
    def count_display(self) -> str:
        return f"{COUNT_CAP}+" if self.capped else str(self.count)


_cards: dict[str, Card] = {}
_attention: list[Callable[[HttpRequest], list[AttentionItem]]] = []


def register_card(
    *, name: str, template: str, context: Callable[[HttpRequest], dict | None], order: int = 100, wide: bool = False
) -> None:
    """Add (or replace, by name) a card on the admin's home page."""
    _cards[name] = Card(name=name, template=template, context=context, order=order, wide=wide)


def register_attention(provider: Callable[[HttpRequest], list[AttentionItem]]) -> None:
    """Add a source of "needs a person" items; it returns only what the user may act on."""
    if provider not in _attention:
        _attention.append(provider)


def cards_for(request: HttpRequest) -> list[tuple[Card, dict]]:
    shown = []
    for card in sorted(_cards.values(), key=lambda card: (card.order, card.name)):
        context = card.context(request)
        if context is not None:
            shown.append((card, context))
    return shown


def attention_for(request: HttpRequest) -> list[AttentionItem]:
    return [item for provider in _attention for item in provider(request)]


def capped_count(queryset: QuerySet) -> tuple[int, bool]:
    """(count, capped): counts at most COUNT_CAP + 1 rows."""
    count = queryset[: COUNT_CAP + 1].count()
    return min(count, COUNT_CAP), count > COUNT_CAP


def attention_item(label: str, queryset: QuerySet, url: str, severity: str = "warning") -> AttentionItem | None:
    """An item for a non-empty capped count, else None."""
    count, capped = capped_count(queryset)
    if not count:
        return None
    return AttentionItem(label=label, count=count, url=url, capped=capped, severity=severity)
