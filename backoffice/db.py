"""Bulk writes cheaper than `bulk_create` for the bulk-action jobs (backoffice.bulk).

`bulk_create` prepares every field of every row in Python (tens of thousands of calls for a
chunk of jobs); `insert_rows` sends one array per column that varies and one value per column
that does not, and lets PostgreSQL expand them with `unnest`. Columns not given take the
field's default (`auto_now`/`auto_now_add` fields: now), exactly as `Model()` would.
"""

import json
from typing import Any

from django.db import connection
from django.db.models import AutoField, BigAutoField, JSONField, Model, SmallAutoField
from django.utils import timezone

from backoffice.card_numbers import refuse_card_numbers_in_rows

_AUTO = (AutoField, BigAutoField, SmallAutoField)


def insert_rows(model: type[Model], *, each: dict[str, list], same: dict | None = None) -> list:
    """INSERT one row per position of the `each` lists (keyed by field attname: `payment_id`),
    with the `same` values on every row; returns the new primary keys in order."""
    same = dict(same or {})
    each = dict(each)
    # The same refusal of card numbers as every save (backoffice.card_numbers).
    refuse_card_numbers_in_rows(model, each)
    same_as_rows = {name: [value] for name, value in same.items()}
    refuse_card_numbers_in_rows(model, same_as_rows)
    same = {name: values[0] for name, values in same_as_rows.items()}
    lengths = {len(values) for values in each.values()}
    if len(lengths) != 1:
        raise ValueError("insert_rows: the `each` lists differ in length")
    (count,) = lengths
    if count == 0:
        return []
    now = timezone.now()
    pk = model._meta.pk
    columns: list[str] = []
    selects: list[str] = []
    arrays: list[tuple[str, list[Any]]] = []
    params: list[Any] = []
    unknown = set(each) | set(same)
    for field in model._meta.concrete_fields:
        name = field.attname
        unknown.discard(name)
        if name in each:
            values = each[name]
        elif name in same:
            values = None
        elif isinstance(field, _AUTO):
            continue
        elif field.primary_key:
            values = [field.get_default() for _ in range(count)]
        elif getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            same[name] = now
            values = None
        else:
            same[name] = field.get_default()
            values = None
        db_type = "jsonb" if isinstance(field, JSONField) else field.db_type(connection)
        columns.append(connection.ops.quote_name(field.column))
        if values is None:
            selects.append(f"%s::{db_type}")
            params.append(_prepared(field, same[name]))
        else:
            alias = f"c{len(arrays)}"
            arrays.append((f"%s::{db_type}[]", [_prepared(field, value) for value in values]))
            selects.append(alias)
    if unknown:
        raise ValueError(f"insert_rows: {model.__name__} has no fields {sorted(unknown)}")
    aliases = ", ".join(f"c{index}" for index in range(len(arrays)))
    # Only quoted names from the model's meta and casts from its fields; every value is a parameter.
    table = connection.ops.quote_name(model._meta.db_table)
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608
        f"SELECT {', '.join(selects)} FROM unnest({', '.join(cast for cast, _ in arrays)}) "
        f"WITH ORDINALITY AS rows({aliases}, position) ORDER BY position "
        f"RETURNING {connection.ops.quote_name(pk.column)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *(values for _, values in arrays)])
        return [pk.to_python(row[0]) for row in cursor.fetchall()]


def _prepared(field, value):
    if isinstance(field, JSONField):
        return None if value is None else json.dumps(value, cls=field.encoder)
    return field.get_db_prep_save(value, connection)
