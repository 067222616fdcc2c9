from django import template
from django.template.loader import render_to_string

from backoffice.dashboard import cards_for

register = template.Library()


@register.simple_tag(takes_context=True)
def dashboard_cards(context) -> list[tuple]:
    """(card, its context, its rendered body) for every registered card the signed-in staff
    member has something in, in order. Use as {% dashboard_cards as cards %}."""
    request = context["request"]
    return [
        (card, card_context, render_to_string(card.template, {**card_context, "card": card}, request=request))
        for card, card_context in cards_for(request)
    ]


@register.filter
def age(seconds) -> str:
    """A duration in seconds as people read it: 42 s, 3 min 5 s, 2 h 10 min, 3 d 4 h."""
    if seconds is None or seconds == "":
        return "–"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
