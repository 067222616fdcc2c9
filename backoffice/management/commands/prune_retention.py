from django.core.management.base import BaseCommand

from backoffice.retention import retention_apply, retention_policies


class Command(BaseCommand):
    help = (
        "Delete what the retention policies let go (succeeded jobs, delivered notifications and their attempts, "
        "expired sessions), in batches of short transactions, until nothing is left. The sweeper process does the "
        "same a few seconds at a time; this is for operators and a first clean-up."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="only count what is due")
        parser.add_argument("--batch-size", type=int, default=None, help="rows per transaction (RETENTION_BATCH_SIZE)")

    def handle(self, *args, dry_run: bool, batch_size: int | None, **options):
        if batch_size is not None and batch_size <= 0:
            self.stderr.write("--batch-size must be greater than zero.")
            raise SystemExit(2)
        for policy in retention_policies():
            self.stdout.write(f"{policy.name}: {policy.what}")
        done = retention_apply(dry_run=dry_run, batch_size=batch_size)
        verb = "due" if dry_run else "deleted"
        for name, count in done.items():
            self.stdout.write(f"{name}: {count} rows {verb}")
