"""Reads shared by the admin, the portal and the drift check."""

from dataclasses import dataclass, field

from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from ledger.models import Account, DriftCheck, Entry
from payments.money import format_minor


@dataclass
class CurrencyBalance:
    currency: str
    pending: int = 0
    available: int = 0
    reserved: int = 0
    payouts_in_transit: int = 0
    kinds: dict = field(default_factory=dict)

    def display(self, kind: str) -> str:
        return format_minor(getattr(self, kind), self.currency)

    @property
    def pending_display(self) -> str:
        return self.display("pending")

    @property
    def available_display(self) -> str:
        return self.display("available")

    @property
    def reserved_display(self) -> str:
        return self.display("reserved")

    @property
    def payouts_in_transit_display(self) -> str:
        return self.display("payouts_in_transit")


def merchant_balances(merchant) -> list[CurrencyBalance]:
    """A merchant's balances per currency from the kept running totals: one indexed query,
    whatever the number of entries."""
    balances: dict[str, CurrencyBalance] = {}
    for account in Account.objects.filter(merchant=merchant).order_by("currency", "kind"):
        balance = balances.setdefault(account.currency, CurrencyBalance(account.currency))
        setattr(balance, account.kind, account.balance_minor)
        balance.kinds[account.kind] = account
    return list(balances.values())


def account_entries(account_ids) -> QuerySet[Entry]:
    """Entries of some accounts, newest first, with what a statement line shows."""
    return (
        Entry.objects.filter(account_id__in=account_ids)
        .select_related("account", "transaction", "transaction__payment", "transaction__refund", "transaction__payout")
        .order_by("-id")
    )


def platform_balance(account: Account) -> int:
    """Platform accounts keep no running total (they would be one hot row for every posting):
    their balance is the sum of their entries."""
    if account.keeps_balance:
        return account.balance_minor
    with connection.cursor() as cursor:
        cursor.execute("SELECT COALESCE(SUM(amount_minor), 0) FROM ledger_entry WHERE account_id = %s", [account.pk])
        return int(cursor.fetchone()[0])


DRIFT_SQL = """
SELECT a.id, a.balance_minor, COALESCE(SUM(e.amount_minor), 0) AS summed
FROM ledger_account a LEFT JOIN ledger_entry e ON e.account_id = a.id
WHERE a.merchant_id IS NOT NULL
GROUP BY a.id, a.balance_minor
HAVING a.balance_minor <> COALESCE(SUM(e.amount_minor), 0)
ORDER BY a.id
"""
UNBALANCED_SQL = """
SELECT e.transaction_id, a.currency, SUM(e.amount_minor)
FROM ledger_entry e JOIN ledger_account a ON a.id = e.account_id
GROUP BY e.transaction_id, a.currency
HAVING SUM(e.amount_minor) <> 0
ORDER BY e.transaction_id
LIMIT 1000
"""
LAST_ENTRY_SQL = """
SELECT DISTINCT ON (account_id) account_id, balance_after_minor
FROM ledger_entry WHERE balance_after_minor IS NOT NULL
ORDER BY account_id, id DESC
"""


def drift_check_run() -> DriftCheck:
    """Compare every kept balance with the sum of its entries (and with its last entry's
    balance after), and look for transactions that do not balance; record the result. Reads
    one snapshot (repeatable read, when it starts the transaction), so postings running
    meanwhile are not reported as drift."""
    started_at = timezone.now()
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        with connection.cursor() as cursor:
            cursor.execute(DRIFT_SQL)
            drifted = [{"account": a, "kept": kept, "summed": int(summed)} for a, kept, summed in cursor.fetchall()]
            cursor.execute(LAST_ENTRY_SQL)
            last_after = dict(cursor.fetchall())
            cursor.execute(UNBALANCED_SQL)
            unbalanced = [{"transaction": t, "currency": c, "off_by": int(off)} for t, c, off in cursor.fetchall()]
        kept = dict(Account.objects.filter(merchant__isnull=False).values_list("id", "balance_minor"))
        checked = len(kept)
    already = {item["account"] for item in drifted}
    for account_id, after in sorted(last_after.items()):
        if account_id not in already and kept.get(account_id) != after:
            drifted.append({"account": account_id, "kept": kept.get(account_id), "last_balance_after": after})
    return DriftCheck.objects.create(
        started_at=started_at,
        finished_at=timezone.now(),
        accounts_checked=checked,
        drifted=drifted,
        unbalanced_transactions=unbalanced,
    )
