"""Admin of payments: presentation plus thin actions. Status and every field are read-only;
adding goes through payments.services.payment_create; actions call one service per payment."""

from typing import TYPE_CHECKING, cast

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.contrib.contenttypes.admin import GenericTabularInline
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponseBadRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from backoffice.admin import JobColumns, ReadOnlyAdminMixin, job_admin_link, may_use_rq_dashboard
from backoffice.admin_actions import ObjectButtons, confirm_with_form, confirm_with_reason
from backoffice.admin_base import PaydeskModelAdmin, fieldset_fields, refuse_nul_bytes
from backoffice.live import LiveStatus, live_status_html, register_live
from backoffice.models import AuditEntry, Job
from payments.admin_forms import (
    DecisionForm,
    PaymentAddForm,
    PaymentImportForm,
    RefundActionForm,
    RefundSettlementRequestForm,
    SettlementRequestForm,
    new_idempotency_key,
)
from payments.exports import (
    PAYMENT_COLUMNS,
    REFUND_COLUMNS,
    export_response,
    payments_for_export,
    refunds_for_export,
)
from payments.imports import ImportInvalid, payments_import_enqueue, payments_import_parse
from payments.models import (
    Export,
    Membership,
    Merchant,
    Payment,
    PaymentAttempt,
    PaymentEvent,
    Refund,
    RefundEvent,
    SettlementRequest,
)
from payments.money import COMMON_CURRENCIES, CURRENCY_CODE, format_minor
from payments.portal.exports import query_dict, saved_query
from payments.portal.reports import MOVING_PAYMENT_STATUSES, MOVING_REFUND_STATUSES
from payments.search import payment_search, refund_search
from payments.selectors import refund_remaining_minor
from payments.services import (
    RECOVER_REFUND_JOB,
    REFUND_JOB,
    payment_cancel,
    payment_create,
    payment_process_now,
    payment_retry,
    refund_approve,
    refund_reject,
    refund_request,
    settlement_approve,
    settlement_reject,
    settlement_request,
)
from payments.services.exports import (
    export_file_response,
    export_needs_job,
    export_request,
    register_staff_list,
)
from payments.states import PaymentStatus, RefundStatus, SettlementStatus


def payment_summary(payment: Payment) -> str:
    """One line naming a payment on the admin's confirmation pages."""
    return f"{payment.public_id} {format_minor(payment.amount_minor, payment.currency)} {payment.status}"


@admin.register(Merchant)
class MerchantAdmin(PaydeskModelAdmin):
    list_display = ["name", "slug", "contact_email", "is_active", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "slug", "contact_email"]
    prepopulated_fields = {"slug": ["name"]}

    def has_delete_permission(self, request, obj=None):
        return False  # payments keep their merchant: deactivate it instead


# --- the payment's page: read-only inlines ------------------------------------------------


class ReadOnlyInline(ReadOnlyAdminMixin):
    extra = 0
    can_delete = False
    show_change_link = False


class AttemptInline(ReadOnlyInline, admin.TabularInline):
    model = PaymentAttempt
    fields = readonly_fields = (
        "number",
        "outcome",
        "gateway_reference",
        "error_code",
        "error_message",
        "latency_ms",
        "lookups",
        "idempotency_key",
        "created_at",
        "completed_at",
    )

    def get_queryset(self, request):
        # Each row prints str(attempt), which names the payment.
        return super().get_queryset(request).select_related("payment")


class EventInline(ReadOnlyInline, admin.TabularInline):
    model = PaymentEvent
    verbose_name_plural = "history"
    fields = readonly_fields = ("created_at", "from_status", "to_status", "by", "reason")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("payment", "actor")

    @admin.display(description="by")
    def by(self, event: PaymentEvent) -> str:
        return str(event.actor) if event.actor_id else event.actor_label or "-"


class JobInline(JobColumns, ReadOnlyInline, GenericTabularInline):
    model = Job
    ordering = ["-created_at"]
    fields = readonly_fields = (
        "job",
        "function",
        "status_live",
        "attempts_display",
        "last_error",
        "run_at",
        "started_at",
        "finished_at",
        "duration",
        "rq_link",
    )

    def get_fields(self, request, obj=None):
        if may_use_rq_dashboard(request.user):
            return self.fields
        return [name for name in self.fields if name != "rq_link"]

    @admin.display(description="job")
    def job(self, job: Job) -> str:
        return job_admin_link(job)


class AuditInline(ReadOnlyInline, GenericTabularInline):
    model = AuditEntry
    ordering = ["-created_at"]
    verbose_name_plural = "staff actions"
    fields = readonly_fields = ("created_at", "actor", "action", "reason")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("actor")


class RefundInline(ReadOnlyInline, admin.TabularInline):
    model = Refund
    fields = readonly_fields = (
        "refund",
        "amount",
        "status",
        "requested_by",
        "approved_by",
        "rejected_by",
        "decision_note",
        "created_at",
    )
    ordering = ["-created_at"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("payment__merchant", "requested_by", "approved_by", "rejected_by")
        )

    @admin.display(description="refund")
    def refund(self, refund: Refund) -> str:
        url = reverse("admin:payments_refund_change", args=[refund.pk])
        return format_html('<a href="{}">{}</a>', url, refund.public_id)

    @admin.display(description="amount")
    def amount(self, refund: Refund) -> str:
        return refund.amount_display


class SettlementInline(ReadOnlyInline, admin.TabularInline):
    model = SettlementRequest
    verbose_name_plural = "manual settlement requests"
    fields = readonly_fields = (
        "settle_as",
        "status",
        "reason",
        "requested_by",
        "decided_by",
        "decision_note",
        "created_at",
    )

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("requested_by", "decided_by")


# --- payments ------------------------------------------------------------------------------


def latest_job_statuses(payments: list[Payment]) -> dict[int, str]:
    """The status of each payment's most recent job: one query for the page's rows only
    (DISTINCT ON over the (content type, object id) index), never a subquery per payment."""
    if not payments:
        return {}
    jobs = (
        Job.objects.filter(
            content_type=ContentType.objects.get_for_model(Payment),
            object_id__in=[str(payment.pk) for payment in payments],
        )
        .order_by("object_id", "-created_at")
        .distinct("object_id")
        .values_list("object_id", "status")
    )
    return {int(object_id): status for object_id, status in jobs}


class PaymentChangeList(ChangeList):
    def get_results(self, request):
        super().get_results(request)
        self.result_list = list(self.result_list)
        statuses = latest_job_statuses(self.result_list)
        for payment in self.result_list:
            payment.latest_job_status = statuses.get(payment.pk)


class CurrencyFilter(admin.SimpleListFilter):
    """A fixed list of currencies (no SELECT DISTINCT over the payments on every page); any
    ISO 4217 code in the URL filters too."""

    title = "currency"
    parameter_name = "currency"

    def lookups(self, request, model_admin):
        return [(code, code) for code in COMMON_CURRENCIES]

    def queryset(self, request, queryset):
        if self.value() and CURRENCY_CODE.fullmatch(self.value()):
            return queryset.filter(currency=self.value())
        return queryset


class LiveJobFilter(admin.SimpleListFilter):
    """Pending payments nothing will process (their job failed, was canceled or lost): the
    dashboard's "pending payments with no live job" links here."""

    title = "live job"
    parameter_name = "live_job"

    def lookups(self, request, model_admin):
        return [("none", "Pending with no live job")]

    def queryset(self, request, queryset):
        if self.value() == "none":
            from payments.home import payments_without_live_job

            return queryset.filter(pk__in=payments_without_live_job().values("pk"))
        return queryset


def payment_live(payment: Payment) -> LiveStatus:
    return LiveStatus(
        status=payment.status,
        label=payment.get_status_display(),
        moving=payment.status in MOVING_PAYMENT_STATUSES,
        token=f"{payment.status}:{payment.updated_at.timestamp()}",
    )


def refund_live(refund: Refund) -> LiveStatus:
    return LiveStatus(
        status=refund.status,
        label=refund.get_status_display(),
        moving=refund.status in MOVING_REFUND_STATUSES,
        token=f"{refund.status}:{refund.updated_at.timestamp()}",
    )


def _read_live(model, make):
    def read(ids: list[str]) -> dict:
        pks = [int(value) for value in ids if value.isdigit()]
        return {str(obj.pk): make(obj) for obj in model.objects.filter(pk__in=pks)}

    return read


register_live("payment", read=_read_live(Payment, payment_live), permission="payments.view_payment")
register_live("refund", read=_read_live(Refund, refund_live), permission="payments.view_refund")


# For the type checker the mixin is a ModelAdmin (it uses the admin's methods); at run time a
# plain class, so the admins' bases keep their order.
if TYPE_CHECKING:
    _AdminBase = admin.ModelAdmin
else:
    _AdminBase = object


class ExportMixin(_AdminBase):
    """ "Export CSV" and "Export XLSX" on a list: the rows the list shows with its current
    filters and search (the same ChangeList, so the same lookup restrictions). Up to
    EXPORT_JOB_THRESHOLD rows they are streamed in the answer; above, a confirmation page
    starts a background job (payments.services.exports) whose page shows the progress and then
    the link to the file, which only the requester (or a superuser) downloads."""

    change_list_template = "admin/paydesk_export_change_list.html"
    export_columns: list = []
    export_kind = ""

    def export_queryset(self, queryset):
        raise NotImplementedError

    def get_urls(self):
        opts = self.model._meta
        prefix = f"{opts.app_label}_{opts.model_name}"
        return [
            path("export/<str:fmt>/", self.admin_site.admin_view(self.export_view), name=f"{prefix}_export"),
            path(
                "export/file/<str:public_id>/",
                self.admin_site.admin_view(self.export_file_view),
                name=f"{prefix}_export_file",
            ),
            *super().get_urls(),
        ]

    def export_view(self, request, fmt: str):
        if fmt not in Export.Format.values:
            raise Http404
        if not self.has_view_permission(request):
            raise PermissionDenied
        refuse_nul_bytes(request)
        try:
            queryset = self.get_changelist_instance(request).get_queryset(request)
        except IncorrectLookupParameters:
            return HttpResponseBadRequest("These filters do not apply to this list.\n", content_type="text/plain")
        if export_needs_job(queryset):
            return self._export_in_background(request, fmt)
        name = f"{self.model._meta.verbose_name_plural}-{timezone.localtime():%Y%m%d-%H%M%S}".replace(" ", "-")
        return export_response(fmt, name, self.export_columns, self.export_queryset(queryset))

    def _export_in_background(self, request, fmt: str):
        if request.method != "POST":
            return TemplateResponse(
                request,
                "admin/paydesk_export_confirm.html",
                {
                    **self.admin_site.each_context(request),
                    "opts": self.model._meta,
                    "file_format": fmt,
                    "threshold": f"{settings.EXPORT_JOB_THRESHOLD:,}",
                    "retention_hours": f"{settings.EXPORT_RETENTION_HOURS:g}",
                    "query": request.GET.urlencode(),
                },
            )
        job = export_request(
            kind=self.export_kind, file_format=fmt, query=saved_query(request.GET), requested_by=request.user
        )
        url = reverse("admin:backoffice_job_change", args=[job.pk])
        self.message_user(
            request,
            format_html('The export is being written in the background: <a href="{}">follow its progress</a>.', url),
            messages.SUCCESS,
        )
        return HttpResponseRedirect(url)

    def export_list_for(self, user, query: dict):
        """The list as `user` saw it with these filters, rebuilt in the worker that writes the file."""
        request = HttpRequest()
        request.method = "GET"
        request.GET = query_dict(query)
        request.user = user
        if not self.has_view_permission(request):
            raise PermissionDenied(f"{user} may no longer view {self.model._meta.verbose_name_plural}.")
        return self.get_changelist_instance(request).get_queryset(request)

    def export_file_view(self, request, public_id: str):
        if not self.has_view_permission(request):
            raise PermissionDenied
        export = Export.objects.filter(public_id=public_id, kind=self.export_kind, merchant__isnull=True).first()
        if export is None or not (export.requested_by_id == request.user.pk or request.user.is_superuser):
            raise Http404("No such export.")
        return export_file_response(export)


@admin.register(Payment)
class PaymentAdmin(ExportMixin, ObjectButtons, PaydeskModelAdmin):
    change_list_template = "admin/payments/payment/change_list.html"
    export_columns = PAYMENT_COLUMNS
    export_kind = Export.Kind.PAYMENTS
    object_buttons = [
        ("process_now", "Process now", lambda payment: payment.status == PaymentStatus.PENDING),
        ("retry_failed", "Retry", lambda payment: payment.status == PaymentStatus.FAILED),
        ("cancel_pending", "Cancel", lambda payment: payment.status == PaymentStatus.PENDING),
        ("refund", "Refund", lambda payment: payment.is_captured() and refund_remaining_minor(payment) > 0),
        ("request_settlement", "Settle by hand", lambda payment: payment.status == PaymentStatus.UNKNOWN),
    ]
    list_display = [
        "public_id",
        "merchant_reference",
        "merchant",
        "amount_display",
        "status_live",
        "latest_job",
        "created_at",
    ]
    list_filter = ["status", CurrencyFilter, "merchant", "created_at", "needs_review", LiveJobFilter]
    # Searched by the term's shape (payments.search.payment_search), not column by column.
    search_fields = ["public_id"]
    search_help_text = (
        "A payment or refund id, a customer e-mail, a processor reference (ch_…), "
        "or a merchant reference or idempotency key."
    )
    large_list = True
    show_full_result_count = False
    actions = ["process_now", "retry_failed", "cancel_pending", "refund", "request_settlement"]
    fieldsets = [
        (None, {"fields": ["public_id", "merchant", "amount_display", "status_page", "refundable", "review_flag"]}),
        ("Order", {"fields": ["merchant_reference", "customer_email", "description", "payment_method"]}),
        ("Record", {"fields": ["idempotency_key", "created_by", "created_at", "updated_at"]}),
    ]
    readonly_fields = fieldset_fields(fieldsets)
    inlines = [AttemptInline, EventInline, RefundInline, SettlementInline, JobInline, AuditInline]
    add_fieldsets = [
        (None, {"fields": ["merchant", "amount", "currency", "payment_method"]}),
        ("Order", {"fields": ["merchant_reference", "customer_email", "description", "idempotency_key"]}),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("merchant", "created_by")

    def get_changelist(self, request, **kwargs):
        return PaymentChangeList

    def get_search_results(self, request, queryset, search_term):
        return payment_search(queryset, search_term, staff=True), False

    class Media:
        js = ["backoffice/live_status.js"]

    def get_urls(self):
        opts = self.model._meta
        imports = path(
            "import/",
            self.admin_site.admin_view(self.import_view),
            name=f"{opts.app_label}_{opts.model_name}_import",
        )
        return [imports, *super().get_urls()]

    def import_view(self, request):
        """Import payments from a CSV file: checked whole in the request (a bad line refuses
        the file, nothing written), created by one background Job (payments.imports)."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = PaymentImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload, merchant = form.cleaned_data["file"], form.cleaned_data["merchant"]
            try:
                items = payments_import_parse(upload.file, merchant=merchant)
            except ImportInvalid as error:
                form.add_error("file", f"{len(error.line_errors)} problem(s); nothing was imported.")
                for number, message in error.line_errors[:100]:
                    form.add_error("file", f"line {number}: {message}")
            else:
                job = payments_import_enqueue(merchant=merchant, items=items, actor=request.user, filename=upload.name)
                self.message_user(
                    request, f"Importing {len(items)} payments for {merchant}: this job creates them.", messages.SUCCESS
                )
                return HttpResponseRedirect(reverse("admin:backoffice_job_change", args=[job.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": "Import payments",
            "opts": self.model._meta,
            "form": form,
        }
        return TemplateResponse(request, "admin/payments/payment/import.html", context)

    def export_queryset(self, queryset):
        return payments_for_export(queryset)

    # Status moves only through the actions' services: no admin form writes a payment.
    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="amount", ordering="amount_minor")
    def amount_display(self, payment: Payment) -> str:
        return payment.amount_display

    @admin.display(description="status", ordering="status")
    def status_live(self, payment: Payment) -> str:
        # The review flag rides with the status: one column less at 1400 px.
        return format_html(
            "{} {}", live_status_html("payment", payment.pk, payment_live(payment)), self.review_flag(payment)
        )

    @admin.display(description="status")
    def status_page(self, payment: Payment) -> str:
        # While the payment may move, the page reloads when it does (attempts, events, jobs).
        return live_status_html("payment", payment.pk, payment_live(payment), reload_on_change=True)

    @admin.display(description="needs review", ordering="needs_review")
    def review_flag(self, payment: Payment) -> str:
        """Shown only when raised: a person must decide what happened at the gateway."""
        if not payment.needs_review:
            return ""
        return format_html('<span class="needs-review">{}</span>', "needs review")

    @admin.display(description="refundable remaining")
    def refundable(self, payment: Payment) -> str:
        return format_minor(refund_remaining_minor(payment), payment.currency)

    # Not sortable: sorting by it would compute every payment's latest job.
    @admin.display(description="latest job")
    def latest_job(self, payment: Payment) -> str:
        status = getattr(payment, "latest_job_status", None)
        return status or "-"

    # --- adding: through payment_create, never a ModelForm save ---------------------------

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            form = PaymentAddForm(request.POST)
            if form.is_valid():
                try:
                    payment, created = payment_create(actor=request.user, **form.payment_create_kwargs())
                except ValidationError as error:
                    form.add_service_error(error)
                else:
                    return self._response_payment_added(request, payment, existed=not created)
        else:
            form = PaymentAddForm(initial={"idempotency_key": new_idempotency_key()})

        admin_form = helpers.AdminForm(form, self.add_fieldsets, {}, model_admin=self)
        context = {
            **self.admin_site.each_context(request),
            "title": "Add payment",
            "subtitle": None,
            "adminform": admin_form,
            "object_id": None,
            "original": None,
            "is_popup": False,
            "to_field": None,
            "media": self.media + admin_form.media,
            "inline_admin_formsets": [],
            "errors": helpers.AdminErrorList(form, []),
            "preserved_filters": self.get_preserved_filters(request),
            # One button: the handler below knows only "save and show the payment".
            "show_save_and_add_another": False,
            "show_save_and_continue": False,
            **(extra_context or {}),
        }
        return self.render_change_form(request, context, add=True, form_url=form_url)

    def _response_payment_added(self, request, payment: Payment, *, existed: bool):
        if existed:
            # A second submit of the same form: the first one made the payment.
            self.message_user(
                request, f"Payment {payment.public_id} was already created by this form.", messages.WARNING
            )
        else:
            self.log_addition(request, payment, [{"added": {}}])
            self.message_user(
                request, f"Payment {payment.public_id} created and queued for processing.", messages.SUCCESS
            )
        return HttpResponseRedirect(reverse("admin:payments_payment_change", args=[payment.pk]))

    # --- actions: a reason, then one service call per payment -----------------------------

    def has_process_permission(self, request) -> bool:
        return request.user.has_perm("payments.process_payment")

    def has_retry_permission(self, request) -> bool:
        return request.user.has_perm("payments.retry_payment")

    def has_cancel_permission(self, request) -> bool:
        return request.user.has_perm("payments.cancel_payment")

    @admin.action(description="Process now (pending payments with no live job)", permissions=["process"])
    def process_now(self, request, queryset):
        return confirm_with_reason(
            self,
            request,
            queryset,
            verb="process",
            done="queued",
            describe=payment_summary,
            apply=lambda payment, reason: payment_process_now(payment=payment, actor=request.user, reason=reason),
            bulk="payments.bulk.payments_process_now_many",
        )

    @admin.action(description="Retry failed payments", permissions=["retry"])
    def retry_failed(self, request, queryset):
        return confirm_with_reason(
            self,
            request,
            queryset,
            verb="retry",
            done="queued",
            describe=payment_summary,
            apply=lambda payment, reason: payment_retry(payment=payment, actor=request.user, reason=reason),
            bulk="payments.bulk.payments_retry_many",
        )

    @admin.action(description="Cancel pending payments", permissions=["cancel"])
    def cancel_pending(self, request, queryset):
        return confirm_with_reason(
            self,
            request,
            queryset,
            verb="cancel",
            done="canceled",
            describe=payment_summary,
            apply=lambda payment, reason: payment_cancel(payment=payment, actor=request.user, reason=reason),
            bulk="payments.bulk.payments_cancel_many",
        )

    def has_refund_permission(self, request) -> bool:
        return request.user.has_perm("payments.request_refund")

    def has_settle_permission(self, request) -> bool:
        return request.user.has_perm("payments.request_settlement")

    @admin.action(description="Refund", permissions=["refund"])
    def refund(self, request, queryset):
        single = queryset.get() if queryset.count() == 1 else None

        requested: list[Refund] = []

        def apply(payment, data):
            amount = data.get("amount") or refund_remaining_minor(payment)
            refund, created = refund_request(
                payment=payment,
                amount_minor=amount,
                reason=data["reason"],
                requested_by=request.user,
                request_key=data["request_key"],
            )
            if created:
                requested.append(refund)
            return refund, created

        response = confirm_with_form(
            self,
            request,
            queryset,
            verb="refund",
            done="refund requested",
            describe=payment_summary,
            form_class=RefundActionForm,
            apply=apply,
            form_kwargs={"payment": single, "remaining_minor": refund_remaining_minor(single) if single else None},
        )
        waiting = [refund for refund in requested if refund.status == RefundStatus.REQUESTED]
        if waiting:
            self.message_user(
                request,
                f"{len(waiting)} of them await a second person's approval ({', '.join(r.public_id for r in waiting)}); "
                f"the others were approved and sent.",
                messages.INFO,
            )
        elif requested:
            self.message_user(request, "Below the approval threshold: approved and sent to the gateway.", messages.INFO)
        return response

    @admin.action(description="Ask for a manual settlement (unknown payments)", permissions=["settle"])
    def request_settlement(self, request, queryset):
        return confirm_with_form(
            self,
            request,
            queryset,
            verb="settle by hand",
            done="sent for approval",
            describe=payment_summary,
            form_class=SettlementRequestForm,
            apply=lambda payment, data: settlement_request(
                payment=payment,
                settle_as=data["settle_as"],
                reason=data["reason"],
                gateway_reference=data["gateway_reference"],
                requested_by=request.user,
                request_key=data["request_key"],
            ),
        )


# --- refunds and manual settlements: decided by a second person -------------------------------


class AwaitingMyApprovalFilter(admin.SimpleListFilter):
    title = "awaiting approval"
    parameter_name = "awaiting"

    def lookups(self, request, model_admin):
        return [("me", "Awaiting my approval"), ("any", "Awaiting anyone's approval")]

    def queryset(self, request, queryset):
        if self.value() == "any":
            return queryset.filter(status="requested")
        if self.value() == "me":
            return queryset.filter(status="requested").exclude(requested_by=request.user)
        return queryset


class RefundEventInline(ReadOnlyInline, admin.TabularInline):
    model = RefundEvent
    verbose_name_plural = "history"
    fields = readonly_fields = ("created_at", "from_status", "to_status", "by", "reason")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("refund", "actor")

    @admin.display(description="by")
    def by(self, event: RefundEvent) -> str:
        return str(event.actor) if event.actor_id else event.actor_label or "-"


@admin.register(Refund)
class RefundAdmin(ExportMixin, ObjectButtons, ReadOnlyAdminMixin, PaydeskModelAdmin):
    export_columns = REFUND_COLUMNS
    export_kind = Export.Kind.REFUNDS

    def export_queryset(self, queryset):
        return refunds_for_export(queryset)

    object_buttons = [
        ("approve", "Approve", lambda refund: refund.status == RefundStatus.REQUESTED),
        ("reject", "Reject", lambda refund: refund.status == RefundStatus.REQUESTED),
        ("request_settlement", "Settle by hand", lambda refund: refund.status == RefundStatus.UNKNOWN),
    ]
    list_display = [
        "public_id",
        "payment_link",
        "merchant",
        "amount",
        "reason_short",
        "status_live",
        "needs_approval",
        "requested_by",
        "decided_by",
        "created_at",
    ]
    list_filter = [AwaitingMyApprovalFilter, "status", "needs_approval", "needs_review", "created_at"]
    # Searched by the term's shape (payments.search.refund_search).
    search_fields = ["public_id"]
    search_help_text = "A refund or payment id, a processor refund reference, or the payment's reference."
    large_list = True
    show_full_result_count = False
    actions = ["approve", "reject", "request_settlement"]
    fields = readonly_fields = (
        "public_id",
        "payment_link",
        "amount",
        "status_page",
        "reason",
        "needs_approval",
        "requested_by",
        "approved_by",
        "rejected_by",
        "decision_note",
        "decided_at",
        "gateway_reference",
        "error_code",
        "error_message",
        "unclear_answers",
        "lookups",
        "needs_review",
        "completed_at",
        "created_at",
        "jobs",
    )
    inlines = [RefundEventInline]

    class Media:
        js = ["backoffice/live_status.js"]

    @admin.display(description="status", ordering="status")
    def status_live(self, refund: Refund) -> str:
        return live_status_html("refund", refund.pk, refund_live(refund))

    @admin.display(description="status")
    def status_page(self, refund: Refund) -> str:
        return live_status_html("refund", refund.pk, refund_live(refund), reload_on_change=True)

    def get_queryset(self, request):
        # The merchant column reads payment.merchant: joined, not a query per row.
        return (
            super()
            .get_queryset(request)
            .select_related("payment__merchant", "requested_by", "approved_by", "rejected_by")
        )

    def get_search_results(self, request, queryset, search_term):
        return refund_search(queryset, search_term), False

    @admin.display(description="payment", ordering="payment__public_id")
    def payment_link(self, refund: Refund) -> str:
        url = reverse("admin:payments_payment_change", args=[refund.payment_id])
        return format_html('<a href="{}">{}</a>', url, refund.payment.public_id)

    @admin.display(description="amount", ordering="amount_minor")
    def amount(self, refund: Refund) -> str:
        return refund.amount_display

    @admin.display(description="merchant", ordering="payment__merchant__name")
    def merchant(self, refund: Refund) -> str:
        return refund.payment.merchant.name

    @admin.display(description="reason")
    def reason_short(self, refund: Refund) -> str:
        return (refund.reason[:60] + "…") if len(refund.reason) > 60 else refund.reason

    @admin.display(description="decided by")
    def decided_by(self, refund: Refund) -> str:
        return str(refund.approved_by or refund.rejected_by or "-")

    @admin.display(description="jobs")
    def jobs(self, refund: Refund) -> str:
        jobs = Job.objects.filter(func__in=[REFUND_JOB, RECOVER_REFUND_JOB], kwargs__refund_id=refund.pk)
        rows = [
            format_html(
                "{} {} ({}/{}) {}",
                job_admin_link(job),
                job.status,
                job.attempts,
                job.max_attempts,
                job.last_error[:200],
            )
            for job in jobs
        ]
        return format_html("<br>".join(["{}"] * len(rows)), *rows) if rows else "-"

    def has_approve_permission(self, request) -> bool:
        return request.user.has_perm("payments.approve_refund")

    @admin.action(description="Approve refunds (as the second person)", permissions=["approve"])
    def approve(self, request, queryset):
        return confirm_with_form(
            self,
            request,
            queryset,
            verb="approve",
            done="approved",
            form_class=DecisionForm,
            describe=describe_refund,
            apply=lambda refund, data: refund_approve(refund=refund, approver=request.user, note=data["note"]),
        )

    @admin.action(description="Reject refunds", permissions=["approve"])
    def reject(self, request, queryset):
        return confirm_with_form(
            self,
            request,
            queryset,
            verb="reject",
            done="rejected",
            form_class=DecisionForm,
            describe=describe_refund,
            apply=lambda refund, data: refund_reject(refund=refund, approver=request.user, note=data["note"]),
        )

    def has_settle_permission(self, request) -> bool:
        return request.user.has_perm("payments.request_settlement")

    @admin.action(description="Ask for a manual settlement (unknown refunds)", permissions=["settle"])
    def request_settlement(self, request, queryset):
        return confirm_with_form(
            self,
            request,
            queryset,
            verb="settle by hand",
            done="sent for approval",
            describe=describe_refund,
            form_class=RefundSettlementRequestForm,
            apply=lambda refund, data: settlement_request(
                payment=refund.payment,
                refund=refund,
                settle_as=data["settle_as"],
                reason=data["reason"],
                gateway_reference=data["gateway_reference"],
                requested_by=request.user,
                request_key=data["request_key"],
            ),
        )


def describe_refund(refund: Refund) -> str:
    """What an approver must see before deciding: merchant, amount, requester and reason."""
    payment = refund.payment
    return (
        f"{refund.public_id}: refund {refund.amount_display} of {payment.public_id} ({payment.merchant}), "
        f"asked by {refund.requested_by}: {refund.reason}"
    )


def describe_settlement(item: SettlementRequest) -> str:
    payment = item.payment
    if item.refund is not None:
        return (
            f"refund {item.refund.public_id} {item.refund.amount_display} of {payment.public_id} "
            f"({payment.merchant}): settle as {item.settle_as}, asked by {item.requested_by}: {item.reason}"
        )
    return (
        f"{payment.public_id} {payment.amount_display} ({payment.merchant}): settle as {item.settle_as}, "
        f"asked by {item.requested_by}: {item.reason}"
    )


@admin.register(SettlementRequest)
class SettlementRequestAdmin(ObjectButtons, ReadOnlyAdminMixin, PaydeskModelAdmin):
    object_buttons = [
        ("approve", "Approve", lambda item: item.status == SettlementStatus.REQUESTED),
        ("reject", "Reject", lambda item: item.status == SettlementStatus.REQUESTED),
    ]
    list_display = ["payment_link", "refund", "settle_as", "status", "requested_by", "decided_by", "created_at"]
    list_filter = [AwaitingMyApprovalFilter, "status", "settle_as"]
    search_fields = ["payment__public_id"]
    actions = ["approve", "reject"]
    fields = readonly_fields = (
        "payment_link",
        "refund",
        "settle_as",
        "status",
        "reason",
        "gateway_reference",
        "requested_by",
        "decided_by",
        "decision_note",
        "created_at",
        "decided_at",
    )

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("payment", "refund", "requested_by", "decided_by")

    @admin.display(description="payment")
    def payment_link(self, settlement: SettlementRequest) -> str:
        url = reverse("admin:payments_payment_change", args=[settlement.payment_id])
        return format_html('<a href="{}">{}</a>', url, settlement.payment.public_id)

    def has_approve_permission(self, request) -> bool:
        return request.user.has_perm("payments.approve_settlement")

    @admin.action(description="Approve settlements (as the second person)", permissions=["approve"])
    def approve(self, request, queryset):
        return confirm_with_form(
            self,
            request,
            queryset,
            verb="approve",
            describe=describe_settlement,
            done="applied",
            form_class=DecisionForm,
            apply=lambda item, data: settlement_approve(settlement=item, approver=request.user, note=data["note"]),
        )

    @admin.action(description="Reject settlements", permissions=["approve"])
    def reject(self, request, queryset):
        return confirm_with_form(
            self,
            request,
            queryset,
            verb="reject",
            describe=describe_settlement,
            done="rejected",
            form_class=DecisionForm,
            apply=lambda item, data: settlement_reject(settlement=item, approver=request.user, note=data["note"]),
        )


@admin.register(Membership)
class MembershipAdmin(PaydeskModelAdmin):
    """Who may use the merchant portal for which merchant; staff accounts need one like anybody."""

    list_display = ["user", "merchant", "role", "created_at"]
    list_filter = ["role", "merchant__is_active"]
    search_fields = ["user__username", "user__email", "merchant__name", "merchant__slug"]
    autocomplete_fields = ["user", "merchant"]
    list_select_related = ["user", "merchant"]


# The worker that writes a large staff export rebuilds the list through its admin.
register_staff_list(Export.Kind.PAYMENTS, cast(ExportMixin, admin.site.get_model_admin(Payment)).export_list_for)
register_staff_list(Export.Kind.REFUNDS, cast(ExportMixin, admin.site.get_model_admin(Refund)).export_list_for)
