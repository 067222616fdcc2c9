from django.core.management.base import BaseCommand

from backoffice.sweeper import jobs_sweep


class Command(BaseCommand):
    help = "One pass of the job sweeper: push due jobs, re-push jobs Redis lost, recover jobs of dead workers."

    def handle(self, *args, **options):
        report = jobs_sweep()
        self.stdout.write(str(report))
