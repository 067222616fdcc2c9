"""Admin actions that change money or jobs: a confirmation page asking why (like Django's
`delete_selected`), then one service call per object, each refusal reported, never raised.

An action method reads:

    @admin.action(description="Retry failed payments", permissions=["retry"])
    def retry_failed(self, request, queryset):
        return confirm_with_reason(
            self, request, queryset, verb="retry", done="queued",
            apply=lambda payment, reason: payment_retry(payment=payment, actor=request.user, reason=reason),
        )

Above ADMIN_BULK_JOB_THRESHOLD selected objects, an action given `bulk=<dotted path of a
chunk handler>` runs as one background job instead (backoffice.bulk): the request answers at
once with the job's page, which shows its progress and each object's outcome.

The permission check lives where Django puts it: `@admin.action(permissions=[...])` hides the
action from users without it, and the changelist refuses a POST naming an action it did not
offer, so a forged confirmation changes nothing.
"""

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django_object_actions import DjangoObjectActions
from django_object_actions import action as object_action

from backoffice.bulk import bulk_action_enqueue
from backoffice.forms import ServiceForm

TEMPLATE = "admin/action_with_reason.html"
# The confirmation page lists this many objects and counts the rest.
LISTED_OBJECTS = 100


class ActionReasonForm(ServiceForm):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        max_length=2000,
        strip=True,
        help_text="Recorded in the audit trail with your name and the time.",
    )


@dataclass
class ActionReport:
    """What a bulk action did: how many objects it changed and why it left the others."""

    done: int = 0
    skipped: Counter = field(default_factory=Counter)
    # Objects this very form had already changed (a second post of the same page): the
    # service found its request key and did nothing more.
    repeated: int = 0

    def message(self, done_label: str) -> str:
        text = f"{self.done} {done_label}"
        if self.repeated:
            text += f", {self.repeated} already submitted by this form (nothing more done)"
        skipped = sum(self.skipped.values())
        if skipped:
            if len(self.skipped) == 1:
                reasons = next(iter(self.skipped))
            else:
                reasons = ", ".join(f"{count} {reason}" for reason, count in self.skipped.most_common())
            text += f", {skipped} skipped: {reasons}"
        return text

    @property
    def level(self) -> int:
        return messages.WARNING if self.skipped or self.repeated else messages.SUCCESS

    def count(self, result: object) -> None:
        if already_done(result):
            self.repeated += 1
        else:
            self.done += 1


def already_done(result: object) -> bool:
    """True when a service that answers `(obj, created)` found its request key already used."""
    return isinstance(result, tuple) and len(result) == 2 and result[1] is False


def apply_each(objects: Iterable[Model], apply: Callable[[Model], object]) -> ActionReport:
    """Call `apply` per object; a refusal (ValidationError) skips that object, not the rest.
    Each service call runs in its own transaction, so one refusal never rolls back another."""
    report = ActionReport()
    for obj in objects:
        try:
            result = apply(obj)
        except ValidationError as error:
            report.skipped[skip_reason(error)] += 1
        except ObjectDoesNotExist:  # deleted between the selection and now
            report.skipped["no longer exists"] += 1
        else:
            report.count(result)
    return report


def skip_reason(error: ValidationError) -> str:
    return "; ".join(error.messages) or "refused"


def confirm_with_reason(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
    *,
    verb: str,
    done: str,
    apply: Callable[[Model, str], object],
    describe: Callable[[Model], str] = str,
    bulk: str | None = None,
):
    """First call: render the confirmation page. Second call (posted from that page with a
    reason): run `apply(obj, reason)` per object and report "N <done>, M skipped: <why>";
    or, above ADMIN_BULK_JOB_THRESHOLD objects and with a `bulk` chunk handler, enqueue
    one background job and answer with its page."""
    return confirm_with_form(
        modeladmin,
        request,
        queryset,
        verb=verb,
        done=done,
        describe=describe,
        form_class=ActionReasonForm,
        apply=lambda obj, data: apply(obj, data["reason"]),
        bulk=bulk,
    )


def confirm_with_form(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
    *,
    verb: str,
    done: str,
    form_class: type[ServiceForm],
    apply: Callable[[Model, dict], object],
    describe: Callable[[Model], str] = str,
    form_kwargs: dict | None = None,
    bulk: str | None = None,
):
    """confirm_with_reason with any form: `apply(obj, cleaned_data)` per object. With a
    single object selected, a refusal goes back on the form (the page shows it) instead of
    into the report, so the operator can correct the value and post again."""
    posted = request.POST.get("post") == "yes"
    form = form_class(request.POST if posted else None, **(form_kwargs or {}))
    count = queryset.count()
    if form.is_valid():
        data = form.cleaned_data
        if bulk and count > settings.ADMIN_BULK_JOB_THRESHOLD:
            return _enqueue_bulk_job(modeladmin, request, queryset, bulk=bulk, verb=verb, reason=data["reason"])
        if count == 1:
            try:
                result = apply(queryset.get(), data)
            except ValidationError as error:
                form.add_service_error(error)
            else:
                report = ActionReport()
                report.count(result)
                modeladmin.message_user(request, report.message(done), report.level)
                return None
        else:
            report = apply_each(queryset, lambda obj: apply(obj, data))
            modeladmin.message_user(request, report.message(done), report.level)
            return None  # the changelist redirects back to itself

    opts = modeladmin.model._meta
    select_across = request.POST.get("select_across") == "1"
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": f"{verb.capitalize()} {count} {opts.verbose_name if count == 1 else opts.verbose_name_plural}?",
        "verb": verb,
        "opts": opts,
        "form": form,
        "count": count,
        "listed": [describe(obj) for obj in queryset[:LISTED_OBJECTS]],
        "unlisted": max(0, count - LISTED_OBJECTS),
        "action": request.POST.get("action", ""),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        # "Select all N" re-applies the changelist's filters (kept in the form's URL) rather
        # than posting thousands of ids; the changelist still wants the ticked ids posted.
        "select_across": select_across,
        "selected_ids": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        "media": modeladmin.media,
    }
    request.current_app = modeladmin.admin_site.name
    return TemplateResponse(request, TEMPLATE, context)


def _enqueue_bulk_job(modeladmin, request, queryset: QuerySet, *, bulk: str, verb: str, reason: str):
    ids = list(queryset.order_by("pk").values_list("pk", flat=True))
    if ids and not isinstance(ids[0], int):
        ids = [str(pk) for pk in ids]
    with transaction.atomic():
        job = bulk_action_enqueue(handler=bulk, ids=ids, reason=reason, requested_by=request.user, verb=verb)
    url = reverse("admin:backoffice_job_change", args=[job.pk])
    opts = modeladmin.model._meta
    modeladmin.message_user(
        request,
        format_html(
            '{} {} {} in the background: <a href="{}">follow its progress</a>.',
            verb.capitalize(),
            len(ids),
            opts.verbose_name_plural,
            url,
        ),
        messages.SUCCESS,
    )
    return HttpResponseRedirect(url)


# --- the same actions as buttons on an object's page ------------------------------------------


def _object_button(list_action: str, label: str):
    @object_action(label=label, methods=("GET", "POST"), button_type="a")
    def button(self, request, obj):
        return self.run_list_action_on(request, obj, list_action)

    button.__name__ = f"button_{list_action}"
    return button


class ObjectButtons(DjangoObjectActions):
    """Buttons on an object's page for the list actions that make sense on it, e.g.

        object_buttons = [("retry_failed", "Retry", lambda payment: payment.status == "failed")]

    A button runs the list action on that one object, so it has the same permission (a user
    who is not offered the list action gets a 403), the same confirmation page asking why, the
    same service call and the same audit entry. A button shows only when its predicate holds.
    """

    object_buttons: list[tuple[str, str, Callable]] = []

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name, label, _ in cls.object_buttons:
            setattr(cls, f"button_{name}", _object_button(name, label))
        cls.change_actions = tuple(f"button_{name}" for name, _, _ in cls.object_buttons)

    def get_change_actions(self, request, object_id, form_url):
        obj = self.get_object(request, object_id)
        if obj is None:
            return []
        offered = self.get_actions(request)
        return [f"button_{name}" for name, _, when in self.object_buttons if name in offered and when(obj)]

    def run_list_action_on(self, request, obj, name: str):
        offered = self.get_actions(request)
        if name not in offered:
            raise PermissionDenied
        func = offered[name][0]
        response = func(self, request, self.get_queryset(request).filter(pk=obj.pk))
        if response is None:  # done (or refused, with a message): back to the object's page
            opts = self.model._meta
            return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]))
        return response
