"""Admin of the ledger: accounts (a merchant's balances), transactions with their entries,
payouts (with four-eyes actions), prices, terms, and the drift check's results. Entries and
transactions are read-only (the database refuses changes anyway); money moves only through
ledger.services."""

import secrets

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html

from backoffice.admin import ReadOnlyAdminMixin
from backoffice.admin_actions import confirm_with_form, confirm_with_reason
from backoffice.admin_base import PaydeskModelAdmin
from ledger.models import (
    Account,
    CapturedFunds,
    DriftCheck,
    Entry,
    MerchantTerms,
    Payout,
    PayoutEvent,
    Price,
    Transaction,
)
from ledger.selectors import drift_check_run, platform_balance
from ledger.services import (
    payout_approve,
    payout_mark_failed,
    payout_mark_paid,
    payout_reject,
    payout_request,
    transaction_correct,
)
from ledger.states import PayoutStatus
from payments.models import Merchant
from payments.money import format_minor, parse_major_amount, validate_currency


def _link(obj, text=None) -> str:
    if obj is None:
        return "-"
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, text or str(obj))


@admin.register(Account)
class AccountAdmin(ReadOnlyAdminMixin, PaydeskModelAdmin):
    list_display = ["__str__", "merchant", "kind", "currency", "balance", "entries_link"]
    list_filter = ["kind", "currency", ("merchant", admin.EmptyFieldListFilter)]
    search_fields = ["merchant__name", "merchant__slug"]
    list_select_related = ["merchant"]
    fields = ["merchant", "kind", "currency", "balance", "entries_link", "created_at"]

    @admin.display(description="balance")
    def balance(self, account: Account) -> str:
        # Platform accounts keep no running total: summed from their entries, one query each.
        return format_minor(platform_balance(account), account.currency)

    @admin.display(description="entries")
    def entries_link(self, account: Account) -> str:
        url = reverse("admin:ledger_entry_changelist") + f"?account__id__exact={account.pk}"
        return format_html('<a href="{}">entries</a>', url)


class EntryInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Entry
    extra = 0
    can_delete = False
    fields = readonly_fields = ("account", "amount", "balance_after")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("account__merchant")

    @admin.display(description="amount")
    def amount(self, entry: Entry) -> str:
        return entry.amount_display

    @admin.display(description="balance after")
    def balance_after(self, entry: Entry) -> str:
        if entry.balance_after_minor is None:
            return "-"
        return format_minor(entry.balance_after_minor, entry.account.currency)


class CorrectionForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 80}), max_length=255, strip=True)


@admin.register(Transaction)
class TransactionAdmin(ReadOnlyAdminMixin, PaydeskModelAdmin):
    list_display = ["id", "cause", "merchant", "payment", "refund", "payout", "memo", "created_at"]
    list_filter = ["cause", "created_at"]
    search_fields = ["=idempotency_key", "=payment__public_id", "=refund__public_id", "=payout__public_id"]
    list_select_related = ["merchant", "payment", "refund", "payout"]
    show_full_result_count = False
    inlines = [EntryInline]
    actions = ["correct"]
    fields = [
        "idempotency_key",
        "cause",
        "merchant",
        "payment",
        "refund",
        "payout",
        "corrects_link",
        "corrections_links",
        "memo",
        "posted_by",
        "created_at",
    ]

    @admin.display(description="corrects")
    def corrects_link(self, posted: Transaction) -> str:
        return _link(posted.corrects)

    @admin.display(description="corrected by")
    def corrections_links(self, posted: Transaction) -> str:
        links = [_link(correction) for correction in posted.corrections.all()]
        return format_html(", ".join(["{}"] * len(links)), *links) if links else "-"

    def has_correct_permission(self, request) -> bool:
        return request.user.has_perm("ledger.post_adjustment")

    @admin.action(description="Correct: post a reversing transaction", permissions=["correct"])
    def correct(self, request, queryset):
        return confirm_with_form(
            self,
            request,
            queryset,
            verb="reverse",
            done="corrected",
            form_class=CorrectionForm,
            apply=lambda posted, data: transaction_correct(corrected=posted, reason=data["reason"], actor=request.user),
        )


@admin.register(Entry)
class EntryAdmin(ReadOnlyAdminMixin, PaydeskModelAdmin):
    list_display = ["id", "transaction_link", "account", "amount", "balance_after_minor", "created_at"]
    list_filter = ["account__kind", "account__currency"]
    search_fields = ["=transaction__idempotency_key"]
    list_select_related = ["account__merchant", "transaction"]
    show_full_result_count = False

    @admin.display(description="transaction")
    def transaction_link(self, entry: Entry) -> str:
        return _link(entry.transaction, f"#{entry.transaction_id} {entry.transaction.cause}")

    @admin.display(description="amount")
    def amount(self, entry: Entry) -> str:
        return entry.amount_display

    # The account page links to its entries.
    extra_lookups = ("account__id__exact",)


class PayoutEventInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = PayoutEvent
    extra = 0
    can_delete = False
    fields = readonly_fields = ("created_at", "from_status", "to_status", "actor", "actor_label", "reason")


class PayoutRequestForm(forms.Form):
    merchant = forms.ModelChoiceField(queryset=Merchant.objects.filter(is_active=True))
    currency = forms.CharField(min_length=3, max_length=3, help_text="ISO 4217 code, such as EUR.")
    amount = forms.CharField(
        max_length=30, required=False, help_text="In major units (12.34). Empty: everything available."
    )
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 80}), max_length=2000, strip=True)
    # Generated when the form is shown: submitting it twice makes one payout.
    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=100)

    def clean_currency(self) -> str:
        currency = self.cleaned_data["currency"].strip().upper()
        validate_currency(currency)
        return currency

    def clean(self):
        cleaned_data = super().clean()
        cleaned_data["amount_minor"] = None
        if cleaned_data.get("amount") and "currency" in cleaned_data:
            try:
                cleaned_data["amount_minor"] = parse_major_amount(cleaned_data["amount"], cleaned_data["currency"])
            except ValidationError:
                self.add_error("amount", "Enter an amount such as 12.34.")
        return cleaned_data


class DecisionForm(forms.Form):
    note = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 80}), max_length=2000, strip=True)


class PaidForm(forms.Form):
    bank_reference = forms.CharField(max_length=100, required=False)
    reason = forms.CharField(required=False, max_length=2000)


@admin.register(Payout)
class PayoutAdmin(ReadOnlyAdminMixin, PaydeskModelAdmin):
    list_display = ["public_id", "merchant", "amount", "status", "origin", "needs_approval", "created_at"]
    list_filter = ["status", "origin", "currency", "needs_approval", "created_at"]
    search_fields = ["=public_id", "merchant__name", "=bank_reference"]
    list_select_related = ["merchant"]
    date_hierarchy = "created_at"
    inlines = [PayoutEventInline]
    actions = ["approve", "reject", "mark_paid", "mark_failed"]
    fields = [
        "public_id",
        "merchant",
        "amount",
        "status",
        "origin",
        "reason",
        "needs_approval",
        "requested_by",
        "decided_by",
        "decision_note",
        "bank_reference",
        "failure_reason",
        "transactions",
        "created_at",
        "updated_at",
    ]
    add_fieldsets = [(None, {"fields": ["merchant", "currency", "amount", "reason", "idempotency_key"]})]

    @admin.display(description="amount", ordering="amount_minor")
    def amount(self, payout: Payout) -> str:
        return payout.amount_display

    @admin.display(description="ledger transactions")
    def transactions(self, payout: Payout) -> str:
        links = [_link(posted) for posted in payout.ledger_transactions.order_by("id")]
        return format_html(", ".join(["{}"] * len(links)), *links) if links else "-"

    def has_add_permission(self, request):
        return request.user.has_perm("ledger.request_payout")

    def has_approve_permission(self, request) -> bool:
        return request.user.has_perm("ledger.approve_payout")

    def has_settle_permission(self, request) -> bool:
        return request.user.has_perm("ledger.settle_payout")

    def add_view(self, request, form_url="", extra_context=None):
        """A payout on demand, through payout_request (four eyes above the threshold)."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            form = PayoutRequestForm(request.POST)
            if form.is_valid():
                data = form.cleaned_data
                try:
                    payout = payout_request(
                        merchant=data["merchant"],
                        currency=data["currency"],
                        amount_minor=data["amount_minor"],
                        reason=data["reason"],
                        requested_by=request.user,
                        idempotency_key=f"admin:{data['idempotency_key']}",
                    )
                except ValidationError as error:
                    for field_name, errors in getattr(error, "message_dict", {None: error.messages}).items():
                        form.add_error(field_name if field_name in form.fields else None, errors)
                else:
                    waiting = payout.status == PayoutStatus.REQUESTED
                    self.message_user(
                        request,
                        f"Payout {payout.public_id} of {payout.amount_display} "
                        + ("awaits a second person's approval." if waiting else "created and queued for the bank."),
                        messages.SUCCESS,
                    )
                    return HttpResponseRedirect(reverse("admin:ledger_payout_change", args=[payout.pk]))
        else:
            form = PayoutRequestForm(initial={"idempotency_key": secrets.token_urlsafe(24)})  # no long digit runs
        admin_form = helpers.AdminForm(form, self.add_fieldsets, {}, model_admin=self)
        context = {
            **self.admin_site.each_context(request),
            "title": "Pay out now",
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
            "show_save_and_add_another": False,
            "show_save_and_continue": False,
            **(extra_context or {}),
        }
        return self.render_change_form(request, context, add=True, form_url=form_url)

    @admin.action(description="Approve payouts (as the second person)", permissions=["approve"])
    def approve(self, request, queryset):
        return confirm_with_form(
            self,
            request,
            queryset,
            verb="approve",
            done="approved",
            form_class=DecisionForm,
            describe=lambda payout: f"{payout.public_id} {payout.amount_display} to {payout.merchant}",
            apply=lambda payout, data: payout_approve(payout=payout, approver=request.user, note=data["note"]),
        )

    @admin.action(description="Reject payouts", permissions=["approve"])
    def reject(self, request, queryset):
        return confirm_with_form(
            self,
            request,
            queryset,
            verb="reject",
            done="rejected",
            form_class=DecisionForm,
            apply=lambda payout, data: payout_reject(payout=payout, approver=request.user, note=data["note"]),
        )

    @admin.action(description="Mark paid (the bank confirmed)", permissions=["settle"])
    def mark_paid(self, request, queryset):
        return confirm_with_form(
            self,
            request,
            queryset,
            verb="mark paid",
            done="marked paid",
            form_class=PaidForm,
            apply=lambda payout, data: payout_mark_paid(
                payout=payout, actor=request.user, bank_reference=data["bank_reference"], reason=data["reason"]
            ),
        )

    @admin.action(description="Mark failed (money returns to the balance)", permissions=["settle"])
    def mark_failed(self, request, queryset):
        return confirm_with_reason(
            self,
            request,
            queryset,
            verb="mark failed",
            done="marked failed",
            apply=lambda payout, reason: payout_mark_failed(payout=payout, actor=request.user, reason=reason),
        )


@admin.register(Price)
class PriceAdmin(PaydeskModelAdmin):
    list_display = ["__str__", "merchant", "currency", "rate_bps", "fixed_minor", "updated_at"]
    list_filter = ["currency", ("merchant", admin.EmptyFieldListFilter)]
    search_fields = ["merchant__name"]
    autocomplete_fields = ["merchant"]

    def has_delete_permission(self, request, obj=None):
        return False  # change the price instead: captures keep the price they were charged


@admin.register(MerchantTerms)
class MerchantTermsAdmin(PaydeskModelAdmin):
    list_display = ["merchant", "release_delay_days", "payouts_paused"]
    list_filter = ["payouts_paused"]
    search_fields = ["merchant__name"]
    autocomplete_fields = ["merchant"]


@admin.register(CapturedFunds)
class CapturedFundsAdmin(ReadOnlyAdminMixin, PaydeskModelAdmin):
    list_display = [
        "payment",
        "merchant",
        "currency",
        "gross_minor",
        "fee_minor",
        "net_minor",
        "available_at",
        "released_in",
    ]
    list_filter = ["currency", ("released_in", admin.EmptyFieldListFilter)]
    search_fields = ["=payment__public_id"]
    list_select_related = ["payment", "merchant", "released_in"]
    show_full_result_count = False


@admin.register(DriftCheck)
class DriftCheckAdmin(ReadOnlyAdminMixin, PaydeskModelAdmin):
    list_display = ["started_at", "clean", "accounts_checked", "drifted_count", "unbalanced_count", "duration"]
    fields = ["started_at", "finished_at", "accounts_checked", "drifted", "unbalanced_transactions"]
    change_list_template = "admin/ledger/driftcheck/change_list.html"

    @admin.display(boolean=True)
    def clean(self, check: DriftCheck) -> bool:
        return check.is_clean

    @admin.display(description="accounts drifted")
    def drifted_count(self, check: DriftCheck) -> int:
        return len(check.drifted)

    @admin.display(description="unbalanced transactions")
    def unbalanced_count(self, check: DriftCheck) -> int:
        return len(check.unbalanced_transactions)

    def duration(self, check: DriftCheck) -> str:
        return f"{(check.finished_at - check.started_at).total_seconds():.2f} s"

    def get_urls(self):
        return [
            path("run/", self.admin_site.admin_view(self.run_view), name="ledger_driftcheck_run"),
            *super().get_urls(),
        ]

    def run_view(self, request):
        if request.method != "POST" or not request.user.has_perm("ledger.run_drift_check"):
            raise PermissionDenied
        check = drift_check_run()
        level = messages.SUCCESS if check.is_clean else messages.ERROR
        self.message_user(
            request,
            f"Drift check: {check.accounts_checked} accounts, {len(check.drifted)} drifted, "
            f"{len(check.unbalanced_transactions)} unbalanced transactions.",
            level,
        )
        return HttpResponseRedirect(reverse("admin:ledger_driftcheck_changelist"))

    def changelist_view(self, request, extra_context=None):
        extra = {"can_run": request.user.has_perm("ledger.run_drift_check"), **(extra_context or {})}
        return super().changelist_view(request, extra_context=extra)
