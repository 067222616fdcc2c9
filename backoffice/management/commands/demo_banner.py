"""The last thing `make run` prints: where to go and how to log in, once everything answers."""

import signal
import threading
import time
import urllib.request

from django.conf import settings
from django.core.management.base import BaseCommand

from backoffice.health import RedisUnavailable, workers


class Command(BaseCommand):
    help = "Wait until the web process and a worker answer, print the URLs and logins once, then idle."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, port, **options):
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline and not self._ready(base):
            stop.wait(0.5)
        if stop.is_set():
            return
        stop.wait(5)  # let the other processes finish their start-up lines (and the first sweep) first
        self.stdout.write(banner(base))
        stop.wait()

    def _ready(self, base: str) -> bool:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as answer:  # noqa: S310 - our own URL
                if answer.status != 200:
                    return False
            return bool(workers())
        except (OSError, RedisUnavailable):
            return False


def banner(base: str) -> str:
    path = settings.RUN_DIR / "demo-logins.txt"  # written by payments' seed_demo
    logins = path.read_text().rstrip() if path.exists() else "  (no logins file: run `manage.py seed_demo`)"
    rule = "=" * 72
    return "\n".join(
        [
            rule,
            "Paydesk is running.",
            f"  Admin (staff):       {base}/admin/",
            f"  Merchant portal:     {base}/merchant/",
            f"  Webhook receiver:    {base}/dev/webhooks/   (development only)",
            f"  Health and metrics:  {base}/readyz   {base}/metrics",
            "Logins (also in .run/demo-logins.txt):",
            logins,
            "E-mails are written to .run/emails/. Ctrl-C stops everything.",
            rule,
        ]
    )
