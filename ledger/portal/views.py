"""The merchant portal's money pages: balance (pending, available, reserved, in transit), fee
and net per payment, payouts, and the account statement (every entry, downloadable as CSV).

Payments never imports the ledger: these views use the portal's access rules from
payments.portal, and the payment page's fee section fills the seam payments.portal.sections
offers (connected in ledger.receivers)."""

import csv
from datetime import UTC

from django.http import Http404, StreamingHttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.utils import timezone
from django.views.decorators.http import require_GET

from ledger.models import Account, CapturedFunds, Entry, Payout
from ledger.selectors import merchant_balances
from payments.money import format_major
from payments.portal.access import merchant_view

PAGE_SIZE = 50
STATEMENT_HEADER = [
    "entry",
    "posted_at",
    "account",
    "currency",
    "amount",
    "amount_minor",
    "balance_after_minor",
    "cause",
    "payment",
    "refund",
    "payout",
    "transaction",
    "memo",
]


def _currency(request, balances) -> str | None:
    currencies = [balance.currency for balance in balances]
    chosen = request.GET.get("currency", "")
    if chosen and chosen not in currencies:
        raise Http404("No such currency in this merchant's accounts.")
    return chosen or (currencies[0] if currencies else None)


def _before(request) -> int | None:
    before = request.GET.get("before", "")
    return int(before) if before.isdigit() else None


@require_GET
@merchant_view
def balance(request):
    balances = merchant_balances(request.merchant)
    recent_funds = (
        CapturedFunds.objects.filter(merchant=request.merchant).select_related("payment").order_by("-id")[:20]
    )
    recent_payouts = Payout.objects.filter(merchant=request.merchant).order_by("-created_at")[:5]
    return render(
        request,
        "merchant/ledger_balance.html",
        {"balances": balances, "recent_funds": recent_funds, "recent_payouts": recent_payouts},
    )


@require_GET
@merchant_view
def payout_list(request):
    payouts = Payout.objects.filter(merchant=request.merchant).order_by("-id")
    before = _before(request)
    if before:
        payouts = payouts.filter(id__lt=before)
    page = list(payouts[: PAGE_SIZE + 1])
    return render(
        request,
        "merchant/ledger_payouts.html",
        {"payouts": page[:PAGE_SIZE], "next_before": page[PAGE_SIZE - 1].pk if len(page) > PAGE_SIZE else None},
    )


def _statement_entries(request, currency: str):
    accounts = Account.objects.filter(merchant=request.merchant, currency=currency)
    return (
        Entry.objects.filter(account__in=accounts)
        .select_related("account", "transaction__payment", "transaction__refund", "transaction__payout")
        .order_by("-id")
    )


@require_GET
@merchant_view
def statement(request):
    """Every entry on the merchant's accounts in one currency, newest first, keyset-paged
    (cheap at any depth)."""
    balances = merchant_balances(request.merchant)
    currency = _currency(request, balances)
    entries, next_before = [], None
    if currency:
        queryset = _statement_entries(request, currency)
        before = _before(request)
        if before:
            queryset = queryset.filter(id__lt=before)
        page = list(queryset[: PAGE_SIZE + 1])
        entries = page[:PAGE_SIZE]
        next_before = entries[-1].pk if len(page) > PAGE_SIZE else None
    return render(
        request,
        "merchant/ledger_statement.html",
        {"balances": balances, "currency": currency, "entries": entries, "next_before": next_before},
    )


class _Echo:
    def write(self, value):
        return value


def _text_cell(value: str) -> str:
    # Memos can hold staff text: neutralise what a spreadsheet would run as a formula.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


@require_GET
@merchant_view
def statement_csv(request):
    balances = merchant_balances(request.merchant)
    currency = _currency(request, balances)
    if currency is None:
        raise Http404("No accounts yet.")
    entries = _statement_entries(request, currency)
    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow(STATEMENT_HEADER)
        for entry in entries.iterator(chunk_size=1000):
            posted = entry.transaction
            yield writer.writerow(
                [
                    entry.pk,
                    entry.created_at.astimezone(UTC).isoformat(),
                    entry.account.kind,
                    currency,
                    format_major(entry.amount_minor, currency),
                    entry.amount_minor,
                    entry.balance_after_minor,
                    posted.cause,
                    posted.payment.public_id if posted.payment_id else "",
                    posted.refund.public_id if posted.refund_id else "",
                    posted.payout.public_id if posted.payout_id else "",
                    posted.pk,
                    _text_cell(posted.memo),
                ]
            )

    filename = f"statement-{request.merchant.slug}-{currency}-{timezone.localdate().isoformat()}.csv"
    return StreamingHttpResponse(
        rows(),
        content_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def payment_fee_section(sender, *, request, merchant, membership, payment, **kwargs):
    """The payment page's gross / fee / net, once the payment is captured."""
    funds = CapturedFunds.objects.filter(payment=payment, merchant=merchant).first()
    if funds is None:
        return ""
    return render_to_string("merchant/ledger_payment_section.html", {"funds": funds}, request=request)
