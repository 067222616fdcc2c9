"""Card numbers (PANs) are never stored, logged or echoed: finding them in any text.

A card number here is a run of 13 to 19 digits, possibly grouped by spaces, dashes, dots or
underscores, that passes the Luhn check. Text holding one is refused when any of our models is
saved (`refuse_card_numbers_on_save`, below); logs get it masked (`mask_card_numbers`,
`CardNumberLogFilter`); forms never show it again (`backoffice.forms`).
"""

import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

DIGIT_RUN = re.compile(r"(?<!\d)\d(?:[ ._-]?\d){12,18}(?![ ._-]?\d)")
# In URLs the separators may be percent- or plus-encoded (a GET search typed with spaces).
URL_DIGIT_RUN = re.compile(r"(?<!\d)\d(?:(?:[ ._+-]|%20|%2[dD]|%2[eE])?\d){12,18}(?!\d)")
MASK = "[card number removed]"
# Our ids (a Job's UUID, in object_id, audit details and logs) join digit groups with dashes:
# digits inside a UUID are never a card number.
UUID = re.compile(r"(?<![0-9a-fA-F-])[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}(?![0-9a-fA-F-])")


def _luhn_valid(digits: list[int]) -> bool:
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _is_card_number(run: str) -> bool:
    digits = re.sub(r"%2[0dDeE]", "", run)
    return _luhn_valid([int(char) for char in digits if char.isdigit()])


def _in_uuid(match: re.Match, uuid_spans: list[tuple[int, int]]) -> bool:
    start, end = match.span()
    return any(start < uuid_end and uuid_start < end for uuid_start, uuid_end in uuid_spans)


def contains_card_number(text: str) -> bool:
    """True if the text holds something that passes for a card number."""
    text = text or ""
    uuid_spans = [match.span() for match in UUID.finditer(text)]
    return any(_is_card_number(run.group()) and not _in_uuid(run, uuid_spans) for run in DIGIT_RUN.finditer(text))


def mask_card_numbers(text: str) -> str:
    """The text with every card number (plain or URL-encoded) replaced by a marker."""

    def masker(uuid_spans: list[tuple[int, int]]):
        def mask(match: re.Match) -> str:
            return MASK if _is_card_number(match.group()) and not _in_uuid(match, uuid_spans) else match.group()

        return mask

    text = DIGIT_RUN.sub(masker([match.span() for match in UUID.finditer(text)]), text)
    return URL_DIGIT_RUN.sub(masker([match.span() for match in UUID.finditer(text)]), text)


class CardNumberLogFilter(logging.Filter):
    """On a handler: the formatted message of every record with card numbers masked (the
    access log line of a GET search holds its query string)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_card_numbers(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


# --- the one check on every text we store ------------------------------------------------------
#
# Every model of Paydesk's own apps is checked before it is saved (a `pre_save` receiver
# connected for all models, and `backoffice.db.insert_rows` for the bulk path): each char, text
# and JSON field (strings inside JSON too) that holds a card number refuses the save with
# `CardNumberRefused`, keyed by the field. A new field is covered without anyone thinking of it.
# A model opts fields out by naming them, with the reason next to the names:
#   card_numbers_masked = (...)  machine-written text kept for the record (errors, tracebacks,
#                                a receiver's answer): stored with the number masked, never refused
#   card_numbers_exempt = (...)  identifiers a processor gives us (hex references): stored as given

REFUSED = "This looks like a card number; card numbers are never accepted or stored."


class CardNumberRefused(ValidationError):
    """A save refused because a text field holds a card number (the message never repeats it)."""


def _strings(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def _masked(value):
    if isinstance(value, str):
        return mask_card_numbers(value)
    if isinstance(value, dict):
        return {_masked(key): _masked(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(item) for item in value]
    return value


def holds_card_number(value) -> bool:
    """True if a field value (a string, or strings anywhere inside JSON) holds a card number."""
    return any(contains_card_number(text) for text in _strings(value))


_checked_fields: dict[type, tuple[models.Field, ...]] = {}
_paydesk_models: dict[type, bool] = {}


def checked_text_fields(model: type[models.Model]) -> tuple[models.Field, ...]:
    """The fields of a model that the check covers: every char, text and JSON field not exempt."""
    if model not in _checked_fields:
        _checked_fields[model] = _text_fields(model)
    return _checked_fields[model]


def _text_fields(model: type[models.Model]) -> tuple[models.Field, ...]:
    exempt = set(getattr(model, "card_numbers_exempt", ()))
    return tuple(
        field
        for field in model._meta.concrete_fields
        if isinstance(field, (models.CharField, models.TextField, models.JSONField)) and field.name not in exempt
    )


def is_paydesk_model(model: type[models.Model]) -> bool:
    """A model of one of this project's apps (not Django's or a library's, nor a migration's
    historical model)."""
    if model not in _paydesk_models:
        _paydesk_models[model] = _in_project(model)
    return _paydesk_models[model]


def _in_project(model: type[models.Model]) -> bool:
    app_path = getattr(model._meta.app_config, "path", None)
    if not app_path:
        return False
    app_path = Path(app_path).resolve()
    base_dir = Path(settings.BASE_DIR).resolve()
    return app_path.is_relative_to(base_dir) and "site-packages" not in app_path.parts


def card_number_errors(model, values: dict) -> dict[str, list[str]]:
    """{field name: [REFUSED]} for the checked fields among `values` (field name -> value) that
    hold a card number; masked fields are never among them."""
    masked = set(getattr(model, "card_numbers_masked", ()))
    return {
        field.name: [REFUSED]
        for field in checked_text_fields(model)
        if field.name in values and field.name not in masked and holds_card_number(values[field.name])
    }


def refuse_card_numbers(instance, *, fields: Iterable[str] | None = None) -> None:
    """Mask the instance's masked fields and raise CardNumberRefused if any other checked
    field (of `fields`, or all) holds a card number."""
    model = type(instance)
    names = {field.name for field in checked_text_fields(model)}
    if fields is not None:
        names &= set(fields)
    for name in names & set(getattr(model, "card_numbers_masked", ())):
        value = getattr(instance, name)
        if holds_card_number(value):
            setattr(instance, name, _masked(value))
    errors = card_number_errors(model, {name: getattr(instance, name) for name in names})
    if errors:
        raise CardNumberRefused(errors, code="card_number")


def refuse_card_numbers_on_save(sender, instance, raw=False, update_fields=None, **kwargs) -> None:
    """pre_save of every model: Paydesk's own models never store a card number."""
    if raw or not is_paydesk_model(sender):
        return
    refuse_card_numbers(instance, fields=update_fields)


def refuse_card_numbers_in_rows(model, columns: dict[str, list]) -> None:
    """The same check for a bulk insert (column attname -> its values, one per row)."""
    if not is_paydesk_model(model):
        return
    masked = set(getattr(model, "card_numbers_masked", ()))
    for field in checked_text_fields(model):
        values = columns.get(field.attname)
        if values is None:
            continue
        if field.name in masked:
            columns[field.attname] = [_masked(value) for value in values]
        elif any(holds_card_number(value) for value in values):
            raise CardNumberRefused({field.name: [REFUSED]}, code="card_number")
