"""Admin of reconciliation: report upload, the day report (page and CSV), the exceptions queue
with its resolutions, and the lines and matching runs read-only. Actions call services."""

import csv
import uuid
from datetime import date, timedelta
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from backoffice.admin import ReadOnlyAdminMixin, job_admin_link
from backoffice.admin_actions import ActionReasonForm, ObjectButtons, confirm_with_form, confirm_with_reason
from backoffice.admin_base import PaydeskModelAdmin
from backoffice.progress import progress_rate
from payments.admin import AwaitingMyApprovalFilter
from payments.admin_forms import DecisionForm
from payments.money import format_minor, parse_major_amount
from reconciliation.formats import FORMATS
from reconciliation.ingest import ReportInvalid, settlement_file_ingest
from reconciliation.models import (
    AdjustmentDirection,
    AdjustmentRequest,
    AdjustmentStatus,
    Discrepancy,
    DiscrepancyStatus,
    MatchingRun,
    SettlementFile,
    SettlementLine,
)
from reconciliation.selectors import day_report, processor_days
from reconciliation.services import (
    adjustment_approval_threshold_minor,
    adjustment_approve,
    adjustment_reject,
    adjustment_request,
    discrepancy_accept,
    discrepancy_link,
    discrepancy_request_settlement,
    matching_enqueue,
)


def report_url(processor: str, day: date) -> str:
    return reverse("admin:reconciliation_day_report", args=[processor, day.isoformat()])


def _parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise Http404("not a day") from None


def _progress_text(job) -> str:
    """Lines done, rate and time left of a matching job (the job's page has the bar)."""
    if not job.has_progress:
        return ""
    rate, seconds_left = progress_rate(job)
    text = f"{job.progress_done:,} / {job.progress_total or 0:,} lines"
    if rate:
        text += f", {rate:,.0f} lines/s"
    if seconds_left is not None and job.status == "running":
        text += f", about {seconds_left:,.0f} s left"
    return text


class UploadForm(forms.Form):
    report = forms.FileField(help_text="The processor's settlement report (CSV), as downloaded.")
    processor = forms.ChoiceField(choices=[(name, name) for name in sorted(FORMATS)])
    day = forms.DateField(
        required=False, help_text="Only needed for a report without lines; otherwise read from the lines."
    )


@admin.register(SettlementFile)
class SettlementFileAdmin(ReadOnlyAdminMixin, PaydeskModelAdmin):
    list_display = ["day", "processor", "source", "filename", "line_count", "new_line_count", "ingested_by", "report"]
    list_filter = ["processor", "source"]
    date_hierarchy = "day"
    fields = [
        "processor", "day", "source", "filename", "sha256", "size_bytes", "line_count", "new_line_count",
        "ingested_by", "ingested_at",
    ]  # fmt: skip
    change_list_template = "reconciliation/settlementfile_change_list.html"

    def has_add_permission(self, request, obj=None):
        return request.user.has_perm("reconciliation.add_settlementfile")

    @admin.display(description="day report")
    def report(self, settlement_file: SettlementFile) -> str:
        return format_html('<a href="{}">report</a>', report_url(settlement_file.processor, settlement_file.day))

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("days/<str:processor>/<str:day>/", view(self.day_report_view), name="reconciliation_day_report"),
            path("days/<str:processor>/<str:day>/csv/", view(self.day_report_csv), name="reconciliation_day_csv"),
            path("days/<str:processor>/<str:day>/match/", view(self.match_view), name="reconciliation_day_match"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "processor_days": processor_days(processor=settings.RECONCILIATION_PROCESSOR, limit=14),
            "processor": settings.RECONCILIATION_PROCESSOR,
        }
        return super().changelist_view(request, extra_context)

    def add_view(self, request, form_url="", extra_context=None):
        """Upload: ingest in one transaction (all or nothing), then queue matching of its day."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = UploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["report"]
            try:
                result = settlement_file_ingest(
                    stream=upload.file,
                    processor=form.cleaned_data["processor"],
                    source=SettlementFile.Source.UPLOAD,
                    filename=upload.name,
                    day=form.cleaned_data["day"],
                    actor=request.user,
                )
            except ReportInvalid as error:
                form.add_error("report", f"{error.total} bad line(s); nothing was ingested.")
                for number, message in error.line_errors:
                    form.add_error("report", f"line {number}: {message}")
            except ValidationError as error:
                form.add_error("report", error.messages)
            else:
                settlement_file = result.file
                if result.created:
                    matching_enqueue(
                        processor=settlement_file.processor, day=settlement_file.day, requested_by=request.user
                    )
                    self.message_user(
                        request,
                        f"Ingested {settlement_file.line_count} lines ({settlement_file.new_line_count} new); "
                        "matching is queued.",
                        messages.SUCCESS,
                    )
                else:
                    self.message_user(request, "This exact file was ingested before: nothing changed.", messages.INFO)
                return HttpResponseRedirect(report_url(settlement_file.processor, settlement_file.day))
        context = {
            **self.admin_site.each_context(request),
            "title": "Upload a settlement report",
            "opts": self.model._meta,
            "form": form,
        }
        return TemplateResponse(request, "reconciliation/upload.html", context)

    def _check_view(self, request):
        if not (self.has_view_permission(request) and request.user.has_perm("reconciliation.view_discrepancy")):
            raise PermissionDenied

    def day_report_view(self, request, processor: str, day: str):
        self._check_view(request)
        report = day_report(processor=processor, day=_parse_day(day))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Reconciliation of {processor} {report.day}",
            "opts": self.model._meta,
            "report": report,
            "job": report.last_run.job if report.last_run else None,
            "job_link": job_admin_link(report.last_run.job, "matching job")
            if report.last_run and report.last_run.job
            else "",
            "exceptions_url": reverse("admin:reconciliation_discrepancy_changelist")
            + "?"
            + urlencode(
                {
                    "day__gte": report.day.isoformat(),
                    "day__lt": (report.day + timedelta(days=1)).isoformat(),
                    "processor__exact": processor,
                    "status__exact": "open",
                }
            ),
            "can_match": request.user.has_perm("reconciliation.resolve_discrepancy"),
            "progress": _progress_text(report.last_run.job) if report.last_run and report.last_run.job else "",
        }
        return TemplateResponse(request, "reconciliation/day_report.html", context)

    def day_report_csv(self, request, processor: str, day: str):
        self._check_view(request)
        report = day_report(processor=processor, day=_parse_day(day))
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="reconciliation-{processor}-{report.day}.csv"'
        writer = csv.writer(response, lineterminator="\n")
        writer.writerow(["processor", "day", "section", "category", "line_type", "currency", "count", "amount_minor"])
        for row in report.rows:
            writer.writerow(
                [processor, report.day, row.section, row.category, row.line_type, row.currency, row.count,
                 row.amount_minor]
            )  # fmt: skip
        return response

    def match_view(self, request, processor: str, day: str):
        """Re-run matching of a day (POST): re-evaluates what is open, never a resolution."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm("reconciliation.resolve_discrepancy"):
            raise PermissionDenied
        if processor not in FORMATS:
            raise Http404("unknown processor")
        run = matching_enqueue(processor=processor, day=_parse_day(day), requested_by=request.user)
        self.message_user(request, f"Matching of {processor} {run.day} is queued.", messages.SUCCESS)
        return HttpResponseRedirect(report_url(processor, run.day))


class AmountFilter(admin.SimpleListFilter):
    title = "amount (minor units)"
    parameter_name = "amount"
    BANDS = {
        "small": (None, 10_000),
        "medium": (10_000, 100_000),
        "large": (100_000, 1_000_000),
        "huge": (1_000_000, None),
    }

    def lookups(self, request, model_admin):
        return [
            ("small", "under 10,000"),
            ("medium", "10,000 - 99,999"),
            ("large", "100,000 - 999,999"),
            ("huge", "1,000,000 and more"),
        ]

    def queryset(self, request, queryset):
        band = self.BANDS.get(self.value())
        if band is None:
            return queryset
        low, high = band
        if low is not None:
            queryset = queryset.filter(amount_minor__gte=low)
        if high is not None:
            queryset = queryset.filter(amount_minor__lt=high)
        return queryset


class LinkForm(ActionReasonForm):
    record = forms.CharField(
        max_length=100,
        help_text="A payment (pay_...), payment attempt key (pay_..._a1) or refund (re_...); for a record "
        "missing from their report, the report line's id (sl_...).",
    )
    field_order = ["record", "reason"]


class AdjustmentForm(ActionReasonForm):
    direction = forms.ChoiceField(choices=AdjustmentDirection.choices, widget=forms.RadioSelect)
    amount = forms.CharField(max_length=30, help_text="In major units of the exception's currency, e.g. 12.34.")
    # Made when the form is shown: posting the same form twice makes one adjustment.
    request_key = forms.CharField(widget=forms.HiddenInput, max_length=100)
    field_order = ["direction", "amount", "reason"]

    def __init__(self, *args, currency: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.currency = currency
        self.fields["request_key"].initial = uuid.uuid4().hex

    def clean_amount(self) -> int:
        # The one parser of amounts: "12,34" is refused, not read as 1,234.
        return parse_major_amount(self.cleaned_data["amount"], self.currency)


def _form_errors(form, error: ValidationError) -> None:
    if hasattr(error, "error_dict"):
        for name, errors in error.message_dict.items():
            form.add_error(name if name in form.fields else None, errors)
    else:
        form.add_error(None, error.messages)


@admin.register(Discrepancy)
class DiscrepancyAdmin(ReadOnlyAdminMixin, PaydeskModelAdmin):
    list_display = [
        "id", "day", "kind", "status", "merchant", "amount_display", "expected_amount_minor", "detail", "line_link",
        "resolution",
    ]  # fmt: skip
    list_filter = ["status", "kind", "merchant", "day", AmountFilter, "processor", "resolution"]
    search_fields = ["=line__line_id", "=line__processor_reference", "=line__idempotency_key", "detail"]
    date_hierarchy = "day"
    list_select_related = ["merchant", "line"]
    show_full_result_count = False
    actions = ["accept", "request_settlement"]
    fields = readonly_fields = (
        "kind", "status", "processor", "day", "line_link", "payment_link", "refund_link", "merchant",
        "amount_display", "expected_amount_minor", "detail", "resolution", "resolution_reason", "resolved_by",
        "resolved_at", "settlement_request", "adjustments_list", "resolve_links", "created_at", "updated_at",
    )  # fmt: skip

    def has_resolve_permission(self, request):
        return request.user.has_perm("reconciliation.resolve_discrepancy")

    @admin.display(description="amount", ordering="amount_minor")
    def amount_display(self, entry: Discrepancy) -> str:
        return entry.amount_display

    @admin.display(description="report line")
    def line_link(self, entry: Discrepancy) -> str:
        line = entry.line
        if line is None:
            return "-"
        url = reverse("admin:reconciliation_settlementline_change", args=[line.pk])
        return format_html('<a href="{}">{}</a>', url, line.line_id)

    @admin.display(description="payment")
    def payment_link(self, entry: Discrepancy) -> str:
        attempt = entry.payment_attempt
        if attempt is None:
            return "-"
        url = reverse("admin:payments_payment_change", args=[attempt.payment_id])
        return format_html('<a href="{}">{}</a> (attempt {})', url, attempt.payment.public_id, attempt.number)

    @admin.display(description="refund")
    def refund_link(self, entry: Discrepancy) -> str:
        if entry.refund is None:
            return "-"
        url = reverse("admin:payments_refund_change", args=[entry.refund_id])
        return format_html('<a href="{}">{}</a>', url, entry.refund.public_id)

    @admin.display(description="resolve")
    def resolve_links(self, entry: Discrepancy) -> str:
        if entry.status != DiscrepancyStatus.OPEN:
            return "-"
        link = reverse("admin:reconciliation_discrepancy_link", args=[entry.pk])
        adjust = reverse("admin:reconciliation_discrepancy_adjust", args=[entry.pk])
        return format_html(
            '<a class="button" href="{}">Link to the right record…</a> '
            '<a class="button" href="{}">Adjust the ledger…</a>',
            link,
            adjust,
        )

    @admin.display(description="ledger adjustments")
    def adjustments_list(self, entry: Discrepancy) -> str:
        adjustments = list(entry.adjustments.select_related("requested_by", "decided_by"))
        if not adjustments:
            return "-"
        parts = []
        for adjustment in adjustments:
            url = reverse("admin:reconciliation_adjustmentrequest_change", args=[adjustment.pk])
            text = f"{adjustment.amount_display} ({adjustment.get_status_display().lower()})"
            if adjustment.ledger_transaction_id:
                ledger_url = reverse("admin:ledger_transaction_change", args=[adjustment.ledger_transaction_id])
                parts.append(format_html('<a href="{}">{}</a>, <a href="{}">ledger transaction</a>', url, text,
                                         ledger_url))  # fmt: skip
            else:
                parts.append(format_html('<a href="{}">{}</a>', url, text))
        return format_html_join(mark_safe("<br>"), "{}", ((part,) for part in parts))

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:pk>/link/", view(self.link_view), name="reconciliation_discrepancy_link"),
            path("<int:pk>/adjust/", view(self.adjust_view), name="reconciliation_discrepancy_adjust"),
            *super().get_urls(),
        ]

    def adjust_view(self, request, pk: int):
        """Resolve by a ledger adjustment: posted at once below the threshold, else awaiting a
        second person (the exceptions' adjustments list)."""
        if not self.has_resolve_permission(request):
            raise PermissionDenied
        entry = get_object_or_404(Discrepancy.objects.select_related("merchant"), pk=pk)
        form = AdjustmentForm(request.POST or None, currency=entry.currency)
        if request.method == "POST" and form.is_valid():
            try:
                adjustment = adjustment_request(
                    discrepancy=entry,
                    actor=request.user,
                    amount_minor=form.cleaned_data["amount"],
                    direction=form.cleaned_data["direction"],
                    reason=form.cleaned_data["reason"],
                    request_key=form.cleaned_data["request_key"],
                )
            except ValidationError as error:
                _form_errors(form, error)
            else:
                if adjustment.status == AdjustmentStatus.POSTED:
                    text, level = (
                        f"{entry} is resolved: {adjustment.amount_display} posted to the ledger.",
                        messages.SUCCESS,
                    )
                else:
                    text = f"The adjustment of {adjustment.amount_display} awaits a second person's approval."
                    level = messages.WARNING
                self.message_user(request, text, level)
                return HttpResponseRedirect(reverse("admin:reconciliation_discrepancy_change", args=[entry.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Adjust the ledger for {entry}",
            "opts": self.model._meta,
            "entry": entry,
            "form": form,
            "account": f"{entry.merchant}'s available balance" if entry.merchant_id else "the processor receivable",
            "threshold": format_minor(adjustment_approval_threshold_minor(entry.currency), entry.currency),
        }
        return TemplateResponse(request, "reconciliation/adjust.html", context)

    def link_view(self, request, pk: int):
        if not self.has_resolve_permission(request):
            raise PermissionDenied
        entry = get_object_or_404(Discrepancy, pk=pk)
        form = LinkForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                discrepancy_link(
                    discrepancy=entry,
                    actor=request.user,
                    record_key=form.cleaned_data["record"],
                    reason=form.cleaned_data["reason"],
                )
            except ValidationError as error:
                _form_errors(form, error)
            else:
                self.message_user(request, f"{entry} is resolved: linked.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:reconciliation_discrepancy_change", args=[entry.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Link {entry} to the right record",
            "opts": self.model._meta,
            "entry": entry,
            "form": form,
        }
        return TemplateResponse(request, "reconciliation/link.html", context)

    @admin.action(description="Accept with a reason (closes them; no money moves)", permissions=["resolve"])
    def accept(self, request, queryset):
        return confirm_with_reason(
            self,
            request,
            queryset,
            verb="accept",
            done="accepted",
            apply=lambda entry, reason: discrepancy_accept(discrepancy=entry, actor=request.user, reason=reason),
        )

    @admin.action(
        description="Ask to settle the unknown payment as captured (a second person approves)",
        permissions=["resolve"],
    )
    def request_settlement(self, request, queryset):
        return confirm_with_reason(
            self,
            request,
            queryset,
            verb="ask to settle",
            done="settlement requests made",
            apply=lambda entry, reason: discrepancy_request_settlement(
                discrepancy=entry, actor=request.user, reason=reason
            ),
        )


def describe_adjustment(adjustment: AdjustmentRequest) -> str:
    """What an approver must see before deciding: the exception, the amount, who asked and why."""
    entry = adjustment.discrepancy
    return (
        f"{adjustment.amount_display} to {entry.merchant or 'the processor receivable'} for {entry} "
        f"({entry.detail}), asked by {adjustment.requested_by}: {adjustment.reason}"
    )


@admin.register(AdjustmentRequest)
class AdjustmentRequestAdmin(ObjectButtons, ReadOnlyAdminMixin, PaydeskModelAdmin):
    object_buttons = [
        ("approve", "Approve", lambda item: item.status == AdjustmentStatus.REQUESTED),
        ("reject", "Reject", lambda item: item.status == AdjustmentStatus.REQUESTED),
    ]
    list_display = [
        "id", "discrepancy_link", "merchant", "amount_display", "status", "needs_approval", "requested_by",
        "decided_by", "created_at",
    ]  # fmt: skip
    list_filter = [AwaitingMyApprovalFilter, "status", "needs_approval"]
    actions = ["approve", "reject"]
    fields = readonly_fields = (
        "discrepancy_link", "merchant", "amount_display", "reason", "status", "needs_approval", "requested_by",
        "decided_by", "decision_note", "ledger_link", "request_key", "created_at", "decided_at",
    )  # fmt: skip

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("discrepancy", "discrepancy__merchant", "merchant", "requested_by", "decided_by")
        )

    @admin.display(description="amount", ordering="amount_minor")
    def amount_display(self, adjustment: AdjustmentRequest) -> str:
        return adjustment.amount_display

    @admin.display(description="exception")
    def discrepancy_link(self, adjustment: AdjustmentRequest) -> str:
        url = reverse("admin:reconciliation_discrepancy_change", args=[adjustment.discrepancy_id])
        return format_html('<a href="{}">{}</a>', url, adjustment.discrepancy)

    @admin.display(description="ledger transaction")
    def ledger_link(self, adjustment: AdjustmentRequest) -> str:
        if adjustment.ledger_transaction_id is None:
            return "-"
        url = reverse("admin:ledger_transaction_change", args=[adjustment.ledger_transaction_id])
        return format_html('<a href="{}">{}</a>', url, adjustment.ledger_transaction)

    def has_approve_permission(self, request) -> bool:
        return request.user.has_perm("reconciliation.approve_adjustment")

    @admin.action(description="Approve adjustments (as the second person)", permissions=["approve"])
    def approve(self, request, queryset):
        return confirm_with_form(
            self,
            request,
            queryset,
            verb="approve",
            describe=describe_adjustment,
            done="posted",
            form_class=DecisionForm,
            apply=lambda item, data: adjustment_approve(adjustment=item, approver=request.user, note=data["note"]),
        )

    @admin.action(description="Reject adjustments", permissions=["approve"])
    def reject(self, request, queryset):
        return confirm_with_form(
            self,
            request,
            queryset,
            verb="reject",
            describe=describe_adjustment,
            done="rejected",
            form_class=DecisionForm,
            apply=lambda item, data: adjustment_reject(adjustment=item, approver=request.user, note=data["note"]),
        )


@admin.register(SettlementLine)
class SettlementLineAdmin(ReadOnlyAdminMixin, PaydeskModelAdmin):
    list_display = ["line_id", "day", "line_type", "amount_display", "outcome", "processor_reference", "note"]
    list_filter = ["outcome", "line_type", "processor", "day"]
    search_fields = ["=line_id", "=processor_reference", "=idempotency_key", "=charge_reference"]
    show_full_result_count = False
    fields = readonly_fields = (
        "file", "processor", "line_id", "occurrence", "line_number", "line_type", "processor_reference",
        "idempotency_key", "charge_reference", "amount_display", "currency", "occurred_at", "day", "outcome",
        "note", "expected_amount_minor", "payment_attempt", "refund", "linked_by_hand", "matched_at",
    )  # fmt: skip

    @admin.display(description="amount", ordering="amount_minor")
    def amount_display(self, line: SettlementLine) -> str:
        return line.amount_display


@admin.register(MatchingRun)
class MatchingRunAdmin(ReadOnlyAdminMixin, PaydeskModelAdmin):
    list_display = ["day", "processor", "job_status", "requested_by", "created_at", "finished_at", "summary"]
    list_filter = ["processor"]
    fields = readonly_fields = (
        "processor",
        "day",
        "job_status",
        "requested_by",
        "created_at",
        "finished_at",
        "summary",
    )
    list_select_related = ["job", "requested_by"]

    @admin.display(description="job")
    def job_status(self, run: MatchingRun) -> str:
        if run.job is None:
            return "-"
        return format_html("{} ({})", job_admin_link(run.job), run.job.get_status_display())
