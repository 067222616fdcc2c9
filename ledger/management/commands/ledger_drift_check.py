from django.core.management.base import BaseCommand, CommandError

from ledger.selectors import drift_check_run


class Command(BaseCommand):
    help = (
        "Compare every merchant account's kept balance with the sum of its entries and look for "
        "transactions that do not balance per currency. Records the result (admin: Drift checks); "
        "exits 1 when anything drifted."
    )

    def handle(self, *args, **options):
        check = drift_check_run()
        self.stdout.write(f"{check.accounts_checked} account(s) checked in {check.finished_at - check.started_at}.")
        for item in check.drifted:
            self.stdout.write(f"DRIFT account {item['account']}: {item}")
        for item in check.unbalanced_transactions:
            self.stdout.write(f"UNBALANCED transaction {item['transaction']} in {item['currency']}: {item['off_by']}")
        if not check.is_clean:
            raise CommandError(
                f"ledger drift: {len(check.drifted)} account(s), {len(check.unbalanced_transactions)} transaction(s)"
            )
        self.stdout.write(self.style.SUCCESS("No drift."))
