"""Remove the files of expired exports (EXPORT_RETENTION_HOURS after they were written)."""

from django.core.management.base import BaseCommand

from payments.services.exports import export_files_prune


class Command(BaseCommand):
    help = "Remove the files and rows of expired exports (safe to run from cron, any number of times)."

    def handle(self, *args, **options):
        removed = export_files_prune()
        if removed:
            self.stdout.write(f"Removed {removed} expired export(s).")
