"""Views of the merchant portal. Each goes through `merchant_view` and reads only the current
merchant's rows; writes go through payments.services with a form's cleaned data."""

import logging
import re

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.core.exceptions import ValidationError
from django.http import Http404, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from backoffice.models import JobStatus
from backoffice.paging import CappedPaginator
from backoffice.password_reset import QueuedPasswordResetView
from payments.errors import PaymentError
from payments.exports import (
    PAYMENT_COLUMNS,
    REFUND_COLUMNS,
    export_response,
    merchant_columns,
    payments_for_export,
    refunds_for_export,
)
from payments.models import Export
from payments.money import format_minor
from payments.portal.access import SESSION_MERCHANT_KEY, merchant_payment_or_404, merchant_payments, merchant_view
from payments.portal.converters import PublicPaymentId
from payments.portal.exports import export_jobs, merchant_list, saved_query
from payments.portal.forms import (
    MerchantLoginForm,
    MerchantPasswordResetForm,
    MerchantSwitchForm,
    PaymentFilterForm,
    PortalPaymentForm,
    RefundForm,
)
from payments.portal.reports import (
    MOVING_PAYMENT_STATUSES,
    attempt_for_merchant,
    dashboard_periods,
    is_moving,
    member_user_ids,
    payment_status_token,
    payment_timeline,
    payments_needing_attention,
    refunds_for_merchant,
)
from payments.portal.sections import contributed_attention, contributed_payment_sections
from payments.selectors import refund_remaining_minor
from payments.services import payment_create, refund_request_by_merchant
from payments.services.exports import export_file_response, export_needs_job, export_request
from payments.states import PaymentStatus

logger = logging.getLogger(__name__)

PAGE_SIZE = 25
STATUS_POLL_MAX_IDS = 100
PUBLIC_ID = re.compile(PublicPaymentId.regex)


# --- logging in and out -----------------------------------------------------------------------


class MerchantLoginView(auth_views.LoginView):
    form_class = MerchantLoginForm
    template_name = "merchant/login.html"
    redirect_authenticated_user = False  # a staff session without a membership must see the form, not a loop
    next_page = reverse_lazy("merchant:dashboard")  # type: ignore[assignment]  # lazy: a str once used


class MerchantLogoutView(auth_views.LogoutView):
    next_page = reverse_lazy("merchant:login")  # type: ignore[assignment]  # lazy: a str once used


class MerchantPasswordResetView(QueuedPasswordResetView):
    form_class = MerchantPasswordResetForm
    template_name = "merchant/password_reset_form.html"
    email_template_name = "merchant/password_reset_email.txt"
    subject_template_name = "merchant/password_reset_subject.txt"
    success_url = reverse_lazy("merchant:password_reset_done")


class MerchantPasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "merchant/password_reset_confirm.html"
    success_url = reverse_lazy("merchant:password_reset_complete")


@require_POST
@merchant_view
def switch_merchant(request):
    form = MerchantSwitchForm(request.POST)
    chosen = form.cleaned_data["merchant"] if form.is_valid() else None
    if chosen not in {m.merchant_id for m in request.memberships}:
        raise Http404("No such merchant.")
    request.session[SESSION_MERCHANT_KEY] = chosen
    return redirect("merchant:dashboard")


# --- dashboard and payments -------------------------------------------------------------------


@require_GET
@merchant_view
def dashboard(request):
    merchant = request.merchant
    attention = payments_needing_attention(merchant) + contributed_attention(
        merchant=merchant, membership=request.membership
    )
    return render(
        request,
        "merchant/dashboard.html",
        {
            "periods": dashboard_periods(merchant),
            "attention": attention,
            "latest_payments": merchant_payments(request)[:10],
            "moving_statuses": MOVING_PAYMENT_STATUSES,
        },
    )


def _filter_form(request) -> PaymentFilterForm:
    return PaymentFilterForm(request.GET)


@require_GET
@merchant_view
def payment_list(request):
    filters = _filter_form(request)
    payments = filters.apply(merchant_payments(request))
    # Counts only as far as the page asked for plus a few (the list says "N+" past that).
    page = CappedPaginator(payments, PAGE_SIZE, page_number=request.GET.get("page")).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "merchant/payment_list.html",
        {
            "filters": filters,
            "page": page,
            "query": query.urlencode(),
            "moving_statuses": MOVING_PAYMENT_STATUSES,
        },
    )


EXPORT_KINDS = {"payments": Export.Kind.PAYMENTS, "refunds": Export.Kind.REFUNDS}
RECENT_EXPORTS = 20
MOVING_JOB_STATUSES = frozenset({JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.RETRYING})


@require_http_methods(["GET", "POST"])
@merchant_view
def list_export(request, kind: str, fmt: str):
    """The payments list (or the refunds of its payments) as CSV or XLSX, with the list's
    filters and the columns of payments.exports. Above EXPORT_JOB_THRESHOLD rows a GET shows a
    confirmation, and its POST starts a background job (the exports page follows it)."""
    if kind not in EXPORT_KINDS or fmt not in Export.Format.values:
        raise Http404("No such export.")
    queryset = merchant_list(merchant=request.merchant, kind=kind, query=request.GET)
    if export_needs_job(queryset):
        if request.method != "POST":
            return render(
                request,
                "merchant/export_confirm.html",
                {"kind": kind, "file_format": fmt, "threshold": settings.EXPORT_JOB_THRESHOLD},
            )
        export_request(
            kind=EXPORT_KINDS[kind],
            file_format=fmt,
            query=saved_query(request.GET),
            requested_by=request.user,
            merchant=request.merchant,
        )
        messages.success(request, "Your export is being prepared: it appears below when ready.")
        return redirect("merchant:exports")
    columns = merchant_columns(PAYMENT_COLUMNS if kind == "payments" else REFUND_COLUMNS)
    rows = payments_for_export(queryset) if kind == "payments" else refunds_for_export(queryset)
    name = f"{kind}-{request.merchant.slug}-{timezone.localdate().isoformat()}"
    return export_response(fmt, name, columns, rows)


@require_GET
@merchant_view
def export_list(request):
    """The merchant's recent background exports with their progress, and links to the files."""
    exports = list(Export.objects.filter(merchant=request.merchant).order_by("-created_at")[:RECENT_EXPORTS])
    jobs = export_jobs(exports)
    now = timezone.now()
    listed = [
        {
            "export": export,
            "job": jobs.get(str(export.pk)),
            "expired": bool(export.expires_at and export.expires_at <= now),
        }
        for export in exports
    ]
    return render(
        request,
        "merchant/exports.html",
        {"listed": listed, "moving": any(item["job"] and item["job"].status in MOVING_JOB_STATUSES for item in listed)},
    )


@require_GET
@merchant_view
def export_download(request, public_id: str):
    """Any member of the merchant that asked for the export; anybody else gets 404."""
    export = Export.objects.filter(public_id=public_id, merchant=request.merchant).first()
    if export is None:
        raise Http404("No such export.")
    return export_file_response(export)


@require_GET
@merchant_view
def payment_statuses(request):
    """Polled by payments/static/payments/portal.js for payments still moving. Ids of other
    merchants' payments are simply absent from the answer."""
    public_ids = [
        public_id for public_id in request.GET.getlist("id")[:STATUS_POLL_MAX_IDS] if PUBLIC_ID.fullmatch(public_id)
    ]
    answer = {}
    for payment in merchant_payments(request).filter(public_id__in=public_ids).prefetch_related("refunds"):
        answer[payment.public_id] = {
            "status": payment.status,
            "label": payment.get_status_display(),
            "token": payment_status_token(payment),
            "moving": is_moving(payment),
        }
    return JsonResponse({"payments": answer})


@require_GET
@merchant_view
def payment_detail(request, public_id: str):
    payment = merchant_payment_or_404(request, public_id)
    member_ids = member_user_ids(request.merchant)
    remaining = refund_remaining_minor(payment)
    return render(
        request,
        "merchant/payment_detail.html",
        {
            "payment": payment,
            "timeline": payment_timeline(payment, member_ids),
            "attempts": [attempt_for_merchant(attempt) for attempt in payment.attempts.order_by("number")],
            "refunds": refunds_for_merchant(payment, member_ids),
            "refund_remaining": format_minor(remaining, payment.currency) if payment.is_captured() else "",
            "can_refund": request.membership.is_owner and remaining > 0 and payment.status != PaymentStatus.UNKNOWN,
            "moving": is_moving(payment),
            "status_token": payment_status_token(payment),
            "sections": contributed_payment_sections(request, payment=payment),
        },
    )


@require_http_methods(["GET", "POST"])
@merchant_view
def payment_new(request):
    if request.method == "POST":
        form = PortalPaymentForm(request.POST, merchant=request.merchant)
        if form.is_valid():
            try:
                payment, created = payment_create(**form.payment_create_kwargs(), actor=request.user)
            except ValidationError as error:  # the service's refusals, and a save refused (card number)
                form.add_service_error(error)
            else:
                if not created:
                    messages.info(request, "That form was already submitted; this is the payment it created.")
                return HttpResponseRedirect(reverse("merchant:payment", args=[payment.public_id]))
    else:
        form = PortalPaymentForm(merchant=request.merchant)
    return render(request, "merchant/payment_new.html", {"form": form})


# --- refunds ------------------------------------------------------------------------------------


def _refund_already_submitted(request, payment):
    messages.info(request, "That refund form was already submitted; its refund is listed below.")
    return redirect("merchant:payment", public_id=payment.public_id)


@require_http_methods(["GET", "POST"])
@merchant_view(owner_only=True)
def refund_new(request, public_id: str):
    payment = merchant_payment_or_404(request, public_id)
    remaining = refund_remaining_minor(payment)
    refundable = remaining > 0 and payment.status != PaymentStatus.UNKNOWN
    form = None
    if request.method == "POST":
        # A form posted again (double click, back and resubmit) refunds nothing more: the
        # service finds the refund of its request key; so does this check, before the amount
        # is compared with a remainder the first post already took.
        posted = RefundForm(request.POST, payment=payment, user=request.user, remaining_minor=remaining)
        request_key = posted.submitted_request_key()
        if request_key and payment.refunds.filter(request_key=request_key).exists():
            return _refund_already_submitted(request, payment)
        if refundable:
            form = posted
            if not form.is_valid():
                if "submission_token" in form.errors:
                    form.renew_submission_token()
            else:
                try:
                    refund, created = refund_request_by_merchant(
                        payment=payment,
                        amount_minor=form.cleaned_data["amount"],
                        reason=form.cleaned_data["reason"],
                        requested_by=request.user,
                        request_key=form.cleaned_data["submission_token"],
                    )
                except PaymentError as error:
                    form.add_service_error(error)
                    form.renew_submission_token()
                else:
                    if not created:
                        return _refund_already_submitted(request, payment)
                    if refund.needs_approval:
                        messages.success(
                            request,
                            f"Refund of {refund.amount_display} requested: "
                            "Paydesk approves refunds of this size before they are sent.",
                        )
                    else:
                        messages.success(request, f"Refund of {refund.amount_display} approved and on its way.")
                    return redirect("merchant:payment", public_id=payment.public_id)
    elif refundable:
        form = RefundForm(payment=payment, user=request.user, remaining_minor=remaining)
    return render(
        request,
        "merchant/refund_new.html",
        {
            "payment": payment,
            "form": form,
            "remaining": format_minor(remaining, payment.currency),
        },
    )
