"""Job bodies: thin, idempotent (each starts from the state in the database)."""

from ledger.selectors import drift_check_run
from ledger.services import funds_release_due, payout_send, payouts_run_daily


def release_due_funds() -> dict:
    """Pending -> available for every capture whose delay has passed (batched)."""
    return {"released": funds_release_due()}


def run_daily_payouts() -> dict:
    """Today's payout per merchant and currency with money available (once per day by key)."""
    return {"payouts": len(payouts_run_daily())}


def send_payout(payout_id: int) -> dict:
    """Hand a pending payout to the bank; any other state does nothing."""
    return {"status": payout_send(payout_id=payout_id).status}


def check_drift() -> dict:
    """Compare kept balances with the sums of entries and record the result (admin: drift checks)."""
    check = drift_check_run()
    return {"clean": check.is_clean, "drifted": len(check.drifted), "unbalanced": len(check.unbalanced_transactions)}
