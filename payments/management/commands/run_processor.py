from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Serve the simulated processor (python -m processor; docs/processor.md) on PROCESSOR_HOST:PROCESSOR_PORT, "
        "with its behaviour from PROCESSOR_* variables: the Procfile runs it under `manage.py supervise`."
    )

    def handle(self, *args, **options):
        from processor.__main__ import main  # the service is not a Django app: it only runs here

        main()
