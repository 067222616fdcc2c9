"""Admin of the back office: the job ledger, the audit trail, and django-rq's dashboard
limited to the staff who may act on jobs. Everything here is read-only; the only writes are
the permission-gated actions, which call backoffice.services."""

import json
import re
import uuid
from datetime import timedelta
from functools import wraps

from axes import admin as axes_admin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django import forms
from django.contrib import admin
from django.contrib.auth import admin as auth_admin
from django.contrib.auth.forms import UserChangeForm
from django.contrib.auth.models import AnonymousUser, Group, User
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.db.models import Q
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django_rq.admin import QueueAdmin
from django_rq.models import Dashboard
from django_rq.settings import get_queues_map

from backoffice.admin_actions import ObjectButtons, confirm_with_reason
from backoffice.admin_base import PaydeskModelAdmin, fieldset_fields
from backoffice.live import LiveStatus, live_status_html, register_live
from backoffice.models import AuditEntry, Job, JobStatus
from backoffice.progress import progress_rate
from backoffice.services import QUEUES, audit_record, job_cancel, job_requeue

# --- links shared with the other apps' admin pages ----------------------------------------


def may_use_rq_dashboard(user) -> bool:
    """django-rq's pages can empty queues and delete jobs: superusers and job operators only."""
    return bool(user.is_active and user.is_staff and (user.is_superuser or user.has_perm("backoffice.requeue_job")))


def rq_job_url(job: Job) -> str | None:
    """The job's page in django-rq, once it has been pushed to Redis."""
    # django-rq numbers queues by their position in the sorted RQ_QUEUES names.
    queue_index = get_queues_map().get(job.queue)
    if queue_index is None or job.queued_at is None:
        return None
    return reverse("admin:django_rq_job_detail", args=[queue_index, str(job.id)])


def rq_job_link(job: Job) -> str:
    url = rq_job_url(job)
    return format_html('<a href="{}">in django-rq</a>', url) if url else "-"


def job_admin_link(job: Job, text: str | None = None) -> str:
    url = reverse("admin:backoffice_job_change", args=[job.pk])
    return format_html('<a href="{}">{}</a>', url, text or str(job.pk)[:8])


def admin_object_link(content_type_id: int | None, object_id: str, text: str) -> str:
    """A link to an object's admin page, or its text when it has none."""
    if not content_type_id or not object_id:
        return text or "-"
    content_type = ContentType.objects.get_for_id(content_type_id)  # cached: no query per row
    try:
        url = reverse(f"admin:{content_type.app_label}_{content_type.model}_change", args=[object_id])
    except NoReverseMatch:
        return text
    return format_html('<a href="{}">{}</a>', url, text)


def pretty_json(value) -> str:
    if value in (None, "", {}, []):
        return "-"
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True, default=str))


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class ReadOnlyAdminMixin:
    """Nothing is added, edited or deleted through these pages; a forged POST gets a 403."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# --- jobs ----------------------------------------------------------------------------------


class JobAgeFilter(admin.SimpleListFilter):
    title = "age"
    parameter_name = "age"

    def lookups(self, request, model_admin):
        return [("hour", "Last hour"), ("today", "Today"), ("older", "Older than a day")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "hour":
            return queryset.filter(created_at__gte=now - timedelta(hours=1))
        if self.value() == "today":
            midnight = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
            return queryset.filter(created_at__gte=midnight)
        if self.value() == "older":
            return queryset.filter(created_at__lt=now - timedelta(days=1))
        return queryset


class QueueFilter(admin.SimpleListFilter):
    """The queues are fixed (backoffice.services.QUEUES): no SELECT DISTINCT queue per page."""

    title = "queue"
    parameter_name = "queue__exact"  # the dashboard's queue links use it

    def lookups(self, request, model_admin):
        return [(name, name) for name in QUEUES]

    def queryset(self, request, queryset):
        return queryset.filter(queue=self.value()) if self.value() else queryset


class FunctionFilter(admin.SimpleListFilter):
    """The job functions, found by skipping along the (func, created_at) index: one probe per
    distinct function, not a SELECT DISTINCT over every job."""

    title = "function"
    parameter_name = "func"

    def lookups(self, request, model_admin):
        return [(func, func.rsplit(".", 1)[-1]) for func in job_functions()]

    def queryset(self, request, queryset):
        return queryset.filter(func=self.value()) if self.value() else queryset


def job_functions() -> list[str]:
    """The distinct job functions of the ledger, a few index probes whatever its size."""
    if connection.vendor != "postgresql":
        return list(Job.objects.order_by("func").values_list("func", flat=True).distinct())
    table = connection.ops.quote_name(Job._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""WITH RECURSIVE funcs(func) AS (
                    (SELECT func FROM {table} ORDER BY func LIMIT 1)
                    UNION ALL
                    SELECT (SELECT func FROM {table} WHERE func > funcs.func ORDER BY func LIMIT 1)
                    FROM funcs WHERE funcs.func IS NOT NULL
                ) SELECT func FROM funcs WHERE func IS NOT NULL"""  # noqa: S608 (the table name is ours)
        )
        return [row[0] for row in cursor.fetchall()]


JOB_ID_PREFIX = re.compile(r"[0-9a-fA-F]{4,32}")


def job_search(jobs, term: str):
    """Jobs by their id (whole, or the 8 characters the list shows), the id of the object they
    concern, or a part of their function's name, each on an index."""
    term = term.strip()
    if not term:
        return jobs
    try:
        return jobs.filter(pk=uuid.UUID(term))
    except ValueError:
        pass
    hex_digits = term.replace("-", "")
    if term.isdigit():
        by_object = Q(object_id=term)
        if JOB_ID_PREFIX.fullmatch(hex_digits):
            return jobs.filter(by_object | _id_prefix(hex_digits))
        return jobs.filter(by_object)
    if JOB_ID_PREFIX.fullmatch(hex_digits):
        return jobs.filter(_id_prefix(hex_digits))
    functions = [func for func in job_functions() if term.lower() in func.lower()]
    return jobs.filter(Q(func__in=functions) | Q(object_id=term))


def _id_prefix(hex_digits: str) -> Q:
    # UUIDs sort by their bytes: a prefix is the range between it padded with 0s and with fs.
    low = uuid.UUID(hex_digits.ljust(32, "0"))
    high = uuid.UUID(hex_digits.ljust(32, "f"))
    return Q(pk__gte=low, pk__lte=high)


class JobColumns:
    """Columns a job shows wherever it is listed: the job list and a payment's jobs."""

    @admin.display(description="function", ordering="func")
    def function(self, job: Job) -> str:
        return job.short_func

    @admin.display(description="attempts")
    def attempts_display(self, job: Job) -> str:
        return f"{job.attempts}/{job.max_attempts}"

    @admin.display(description="duration")
    def duration(self, job: Job) -> str:
        seconds = job.duration_seconds
        return "-" if seconds is None else f"{seconds:.3f} s"

    @admin.display(description="django-rq")
    def rq_link(self, job: Job) -> str:
        return rq_job_link(job)

    @admin.display(description="status", ordering="status")
    def status_live(self, job: Job) -> str:
        return live_status_html("job", job.pk, job_live(job))


MOVING_JOB_STATUSES = frozenset({JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.RETRYING})


def job_live(job: Job) -> LiveStatus:
    return LiveStatus(
        status=job.status,
        label=job.get_status_display(),
        moving=job.status in MOVING_JOB_STATUSES,
        token=f"{job.status}:{job.attempts}:{getattr(job, 'progress_done', 0)}",
    )


def jobs_live(ids: list[str]) -> dict[str, LiveStatus]:
    valid = []
    for value in ids:
        try:
            valid.append(uuid.UUID(value))
        except ValueError:
            continue
    return {str(job.pk): job_live(job) for job in Job.objects.filter(pk__in=valid)}


register_live("job", read=jobs_live, permission="backoffice.view_job")


def _download_url(job: Job) -> str:
    """A job that wrote a file names its download in its result (`download`: a path on this
    site); the download view checks who may fetch it."""
    url = job.result.get("download") if isinstance(job.result, dict) else None
    if job.status != JobStatus.SUCCEEDED or not isinstance(url, str):
        return ""
    return url if url.startswith("/") and not url.startswith("//") else ""


@admin.register(Job)
class JobAdmin(ObjectButtons, JobColumns, ReadOnlyAdminMixin, PaydeskModelAdmin):
    object_buttons = [
        ("requeue", "Requeue", lambda job: job.can_requeue()),
        ("cancel", "Cancel", lambda job: job.can_cancel()),
    ]
    list_display = [
        "job",
        "function",
        "concerns_link",
        "queue",
        "status_live",
        "attempts_display",
        "run_at",
        "created_at",
        "duration",
        "last_error_short",
    ]
    list_filter = ["status", QueueFilter, FunctionFilter, JobAgeFilter]
    # Searched by the term's shape (job_search), each on an index.
    search_fields = ["id"]
    search_help_text = "A job id (or its first characters), the id of the object it concerns, or a function name."
    list_select_related = ["content_type"]
    large_list = True
    show_full_result_count = False  # the ledger grows without bound; skip the second COUNT(*)
    actions = ["requeue", "cancel"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "id",
                    "func",
                    "arguments",
                    "queue",
                    "status_page",
                    "concerns_link",
                    "requested_by",
                    "rq_link",
                ]
            },
        ),
        ("Attempts", {"fields": ["attempts", "max_attempts", "worker_name"]}),
        (
            "Timings",
            {
                "fields": [
                    "run_at",
                    "created_at",
                    "queued_at",
                    "started_at",
                    "heartbeat_at",
                    "finished_at",
                    "duration",
                ]
            },
        ),
        ("Outcome", {"fields": ["last_error", "traceback_display", "result_display"]}),
    ]
    # Only for jobs that report progress (backoffice.progress), right after the first block.
    progress_fieldset = ("Progress", {"fields": ["progress_display", "outcomes_display"]})
    # Only for jobs that wrote a file (a large export), once it is written.
    download_fieldset = ("File", {"fields": ["download_display"]})
    readonly_fields = fieldset_fields([*fieldsets, progress_fieldset, download_fieldset])

    class Media:
        css = {"all": ["backoffice/jobs.css"]}
        js = ["backoffice/live_status.js"]

    def get_queryset(self, request):
        # One query per concerned model for the whole page, for the "concerns" column.
        return super().get_queryset(request).select_related("requested_by").prefetch_related("concerns")

    def get_search_results(self, request, queryset, search_term):
        return job_search(queryset, search_term), False

    def get_fieldsets(self, request, obj=None):
        first, *rest = self.fieldsets
        if not may_use_rq_dashboard(request.user):
            first = (None, {"fields": [name for name in first[1]["fields"] if name != "rq_link"]})
        extra = []
        if obj is not None and obj.has_progress:
            extra.append(self.progress_fieldset)
        if obj is not None and _download_url(obj):
            extra.append(self.download_fieldset)
        return [first, *extra, *rest]

    @admin.display(description="job", ordering="created_at")
    def job(self, job: Job) -> str:
        return str(job.pk)[:8]

    @admin.display(description="status")
    def status_page(self, job: Job) -> str:
        # While the job may move, the page reloads when it does (status, attempt, progress).
        return live_status_html("job", job.pk, job_live(job), reload_on_change=True)

    @admin.display(description="concerns")
    def concerns_link(self, job: Job) -> str:
        if not job.content_type_id or not job.object_id:
            return job.object_id or "-"
        target = job.concerns
        model = ContentType.objects.get_for_id(job.content_type_id).model  # cached: no query
        text = str(target) if target is not None else f"{model} {job.object_id} (deleted)"
        return admin_object_link(job.content_type_id, job.object_id, text)

    @admin.display(description="last error")
    def last_error_short(self, job: Job) -> str:
        return (job.last_error[:80] + "…") if len(job.last_error) > 80 else job.last_error or "-"

    @admin.display(description="arguments")
    def arguments(self, job: Job) -> str:
        return pretty_json(job.kwargs)

    @admin.display(description="traceback")
    def traceback_display(self, job: Job) -> str:
        return format_html("<pre>{}</pre>", job.traceback) if job.traceback else "-"

    @admin.display(description="result")
    def result_display(self, job: Job) -> str:
        return pretty_json(job.result)

    @admin.display(description="progress")
    def progress_display(self, job: Job) -> str:
        total = job.progress_total or 0
        rate, seconds_left = progress_rate(job)
        details = [f"{job.progress_done:,} / {total:,}"]
        if total:
            details.append(f"{100 * job.progress_done // total}%")
        if rate is not None:
            details.append(f"{rate:,.0f} per second")
        if seconds_left is not None and job.progress_done < total and job.status == "running":
            details.append(f"about {_duration(seconds_left)} left")
        return format_html(
            '<progress class="job-progress" value="{}" max="{}"></progress> <span class="job-progress-text">{}</span>',
            job.progress_done,
            max(total, 1),
            " · ".join(details),
        )

    @admin.display(description="download")
    def download_display(self, job: Job) -> str:
        return format_html('<a class="job-download" href="{}">Download the file</a>', _download_url(job))

    @admin.display(description="outcomes")
    def outcomes_display(self, job: Job) -> str:
        outcomes = job.progress_outcomes or {}
        counts = [("done", "-", f"{outcomes.get('done', 0):,}")]
        counts += [("skipped", why, f"{count:,}") for why, count in sorted((outcomes.get("skipped") or {}).items())]
        listed = outcomes.get("objects") or []
        return format_html(
            '<table class="job-outcomes"><thead><tr><th>outcome</th><th>why</th><th>objects</th></tr></thead>'
            "<tbody>{}</tbody></table>{}",
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", counts),
            format_html(
                '<table class="job-outcomes job-outcome-objects"><thead><tr><th>object</th><th>outcome</th>'
                "<th>why</th></tr></thead><tbody>{}</tbody></table>",
                format_html_join(
                    "",
                    '<tr class="outcome-{}"><td>{}</td><td>{}</td><td>{}</td></tr>',
                    ((item["outcome"], item["object"], item["outcome"], item["reason"] or "-") for item in listed),
                ),
            )
            if listed
            else "",
        )

    def has_requeue_permission(self, request) -> bool:
        return request.user.has_perm("backoffice.requeue_job")

    def has_cancel_permission(self, request) -> bool:
        return request.user.has_perm("backoffice.cancel_job")

    @admin.action(description="Requeue failed or canceled jobs", permissions=["requeue"])
    def requeue(self, request, queryset):
        return confirm_with_reason(
            self,
            request,
            queryset,
            verb="requeue",
            done="requeued",
            apply=lambda job, reason: job_requeue(job=job, actor=request.user, reason=reason),
            bulk="backoffice.services.jobs_requeue_many",
        )

    @admin.action(description="Cancel jobs that have not run", permissions=["cancel"])
    def cancel(self, request, queryset):
        return confirm_with_reason(
            self,
            request,
            queryset,
            verb="cancel",
            done="canceled",
            apply=lambda job, reason: job_cancel(job=job, actor=request.user, reason=reason),
            bulk="backoffice.services.jobs_cancel_many",
        )


# --- audit trail ---------------------------------------------------------------------------


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdminMixin, PaydeskModelAdmin):
    list_display = ["created_at", "actor", "action", "target_link", "reason"]
    list_filter = ["action", "actor", "created_at"]
    search_fields = ["object_repr", "object_id", "reason"]
    list_select_related = ["actor", "content_type"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    fields = readonly_fields = (
        "created_at",
        "actor",
        "action",
        "target_link",
        "object_repr",
        "reason",
        "details_display",
    )

    @admin.display(description="object")
    def target_link(self, entry: AuditEntry) -> str:
        return admin_object_link(entry.content_type_id, entry.object_id, entry.object_repr or entry.object_id)

    @admin.display(description="details")
    def details_display(self, entry: AuditEntry) -> str:
        return pretty_json(entry.details)


# --- django-rq's dashboard -----------------------------------------------------------------

# django-rq's statistics endpoints (queue counts, the Redis host, port and db) answer a bearer
# token of their own as well as a staff session: the token stays, the session must be allowed.
RQ_API_URL_NAMES = {"django_rq_home_json", "django_rq_metrics"}
# Views that only show what a bulk action will do: the action itself is audited, not these.
RQ_CONFIRMATION_VIEWS = {"confirm_action"}


class RQDashboardAdmin(PaydeskModelAdmin, QueueAdmin):
    """django-rq's dashboard in the admin index. Its views only ask for is_staff, yet they can
    empty queues and delete or requeue RQ jobs behind our ledger's back: only superusers and
    users who may requeue our jobs get in."""

    def has_module_permission(self, request):
        return may_use_rq_dashboard(request.user)

    def has_view_permission(self, request, obj=None):
        return may_use_rq_dashboard(request.user)

    def has_change_permission(self, request, obj=None):
        return may_use_rq_dashboard(request.user)

    def get_urls(self):
        urls = super().get_urls()
        for pattern in urls:
            if pattern.name in RQ_API_URL_NAMES:
                pattern.callback = self._token_or_permitted_session(pattern.callback)
            else:
                pattern.callback = self._refuse_staff_without_permission(pattern.callback)
        return urls

    @staticmethod
    def _token_or_permitted_session(view):
        @wraps(view)
        def guarded(request, *args, **kwargs):
            if not may_use_rq_dashboard(request.user):
                # Seen as anonymous, so only django-rq's own API token lets the request through.
                request.user = AnonymousUser()
            return view(request, *args, **kwargs)

        return guarded

    @staticmethod
    def _refuse_staff_without_permission(view):
        @wraps(view)
        def guarded(request, *args, **kwargs):
            # Anonymous users fall through to the admin's own redirect to the login page.
            if request.user.is_active and request.user.is_staff and not may_use_rq_dashboard(request.user):
                raise PermissionDenied
            response = view(request, *args, **kwargs)
            if request.method == "POST" and view.__name__ not in RQ_CONFIRMATION_VIEWS and response.status_code < 400:
                # Emptying a queue or deleting an RQ job moves work behind the ledger's back:
                # it goes in the audit trail like our own job actions, naming the jobs.
                audit_record(
                    actor=request.user,
                    action=f"rq_dashboard_{getattr(view, '__name__', 'action')}",
                    target=None,
                    details={
                        "path": request.path,
                        "action": request.POST.get("action", ""),
                        "job_ids": request.POST.getlist("job_ids")
                        or ([kwargs["job_id"]] if "job_id" in kwargs else []),
                    },
                )
            return response

        return guarded


if admin.site.is_registered(Dashboard):
    admin.site.unregister(Dashboard)
admin.site.register(Dashboard, RQDashboardAdmin)


# --- Django's and django-axes's models: the same lookup rules as ours --------------------------------------


class UserAdmin(PaydeskModelAdmin, auth_admin.UserAdmin):
    form = UserChangeForm  # Django's own forms (password hashes), not ours


class GroupAdmin(PaydeskModelAdmin, auth_admin.GroupAdmin):
    form = forms.ModelForm  # Django's own (GroupAdmin sets none)


# django-axes's pages (lockouts and log-in attempts: unlock someone by deleting their attempt).
class AccessAttemptAdmin(PaydeskModelAdmin, axes_admin.AccessAttemptAdmin):
    pass


class AccessLogAdmin(PaydeskModelAdmin, axes_admin.AccessLogAdmin):
    pass


class AccessFailureLogAdmin(PaydeskModelAdmin, axes_admin.AccessFailureLogAdmin):
    pass


for _model, _model_admin in (
    (User, UserAdmin),
    (Group, GroupAdmin),
    (AccessAttempt, AccessAttemptAdmin),
    (AccessLog, AccessLogAdmin),
    (AccessFailureLog, AccessFailureLogAdmin),
):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
    admin.site.register(_model, _model_admin)


admin.site.site_header = "Paydesk back office"
admin.site.site_title = "Paydesk"
admin.site.site_url = None  # staff have no public site to go back to
# The left navigation takes 270 px that the lists need (at 1400 px the payments list lost its
# status column behind a scroll); the dashboard and breadcrumbs lead everywhere instead.
admin.site.enable_nav_sidebar = False
# The home page is the dashboard (backoffice/dashboard.py), with the list of tables below it.
admin.site.index_template = "admin/paydesk_home.html"
