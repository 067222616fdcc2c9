import signal
import threading

from django.core.management.base import BaseCommand

from backoffice.sweeper import PeriodicSweeper


class Command(BaseCommand):
    help = (
        "The periodic process: sweep the job ledger every JOBS_SWEEP_INTERVAL_SECONDS, in this process, "
        "riding out PostgreSQL and Redis outages. Run one (a second is harmless)."
    )

    def handle(self, *args, **options):
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        PeriodicSweeper().run_forever(stop)
