"""The base class of every admin page in Paydesk (`PaydeskModelAdmin`).

Django's admin turns any query-string parameter of a list page into a lookup on the model
(`?secret__regex=^whsec_A` lists the row or not), so a viewer could read any column one guess
at a time. Here a list page accepts only the parameters its own `list_filter` and
`date_hierarchy` produce; anything else is refused with a 400 before a query runs. Search
(`q`), ordering, paging and popups are Django's own parameters and stay as they are.

Subclass it instead of `admin.ModelAdmin`. A custom `FieldListFilter` that reads other
parameters names them in `extra_lookups`.
"""

from collections.abc import Iterable
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin import filters as admin_filters
from django.contrib.admin import widgets
from django.contrib.admin.utils import get_fields_from_path
from django.contrib.admin.views.main import PAGE_VAR
from django.core.exceptions import SuspiciousOperation

from backoffice.forms import CardNumberCheckedModelForm
from backoffice.paging import CappedPaginator


def fieldset_fields(fieldsets: Iterable[Any]) -> list[str]:
    """Every field the fieldsets name, in order: the read-only fields of a page that edits none."""
    return [name for _, options in fieldsets for name in options["fields"]]


def _field_list_filter_class(field) -> type:
    """The FieldListFilter Django picks for a field named alone in list_filter."""
    # Django's own registry of field filters (private, so not in django-stubs).
    for test, list_filter_class in admin_filters.FieldListFilter._field_list_filters:  # type: ignore[attr-defined]
        if test(field):
            return list_filter_class
    return admin_filters.FieldListFilter


def filter_parameters(model, list_filter_item) -> set[str]:
    """The query-string parameters one `list_filter` entry reads (what Django's filters emit)."""
    if isinstance(list_filter_item, type) and issubclass(list_filter_item, admin_filters.SimpleListFilter):
        return {str(list_filter_item.parameter_name)}  # Django refuses a SimpleListFilter without one
    if isinstance(list_filter_item, (list, tuple)):
        path, list_filter_class = list_filter_item
    else:
        path, list_filter_class = list_filter_item, None
    field = get_fields_from_path(model, path)[-1]
    list_filter_class = list_filter_class or _field_list_filter_class(field)
    if issubclass(list_filter_class, admin_filters.RelatedFieldListFilter):
        return {f"{path}__{field.target_field.name}__exact", f"{path}__isnull"}  # type: ignore[attr-defined]
    if issubclass(list_filter_class, admin_filters.DateFieldListFilter):
        return {f"{path}__gte", f"{path}__lt", f"{path}__isnull"}
    if issubclass(list_filter_class, admin_filters.AllValuesFieldListFilter):
        return {path, f"{path}__exact", f"{path}__isnull"}
    if issubclass(list_filter_class, admin_filters.EmptyFieldListFilter):
        return {f"{path}__isempty"}
    # Choices, booleans and the generic filter: an exact value, or empty.
    return {f"{path}__exact", f"{path}__isnull"}


class PaydeskModelAdmin(admin.ModelAdmin):
    """Lists accept only their own filters' parameters; a NUL byte anywhere in a list's
    query string is a 400 (PostgreSQL refuses NUL in text, which would be a 500)."""

    # Parameters read by custom filters that the shapes in filter_parameters() do not cover.
    extra_lookups: tuple[str, ...] = ()
    # A table that grows without bound (payments, jobs, refunds): the list counts only as far
    # as the page asked for plus a few more (backoffice.paging) and never the whole table.
    # Such lists also set show_full_result_count = False and use no date_hierarchy (its
    # drill-down runs SELECT DISTINCT date_trunc(...) over every row on every page).
    large_list = False

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        if not self.large_list:
            return super().get_paginator(request, queryset, per_page, orphans, allow_empty_first_page)
        return CappedPaginator(
            queryset,
            per_page,
            orphans=orphans,
            allow_empty_first_page=allow_empty_first_page,
            page_number=request.GET.get(PAGE_VAR, 1),
        )

    # Card numbers typed into any text field are refused on the form (backoffice.card_numbers).
    form: type[forms.ModelForm] = CardNumberCheckedModelForm

    def allowed_lookups(self, request) -> set[str]:
        allowed = set(self.extra_lookups)
        for list_filter_item in self.get_list_filter(request):
            allowed |= filter_parameters(self.model, list_filter_item)
        if self.date_hierarchy:
            allowed |= {f"{self.date_hierarchy}__{part}" for part in ("year", "month", "day")}
        return allowed

    def lookup_allowed(self, lookup, value, request=None):
        # Raw-id popups filter by their foreign key's limit_choices_to: exactly those pairs.
        for fk_lookup in self.model._meta.related_fkey_lookups:
            if callable(fk_lookup):
                fk_lookup = fk_lookup()
            if (lookup, value) in widgets.url_params_from_lookup_dict(fk_lookup).items():
                return True
        return lookup in self.allowed_lookups(request)

    def changelist_view(self, request, extra_context=None):
        refuse_nul_bytes(request)
        return super().changelist_view(request, extra_context)


def refuse_nul_bytes(request) -> None:
    """A clear 400 for a NUL byte in any query-string name or value."""
    for name, values in request.GET.lists():
        if "\x00" in name or any("\x00" in value for value in values):
            raise SuspiciousOperation("NUL byte in the query string")
