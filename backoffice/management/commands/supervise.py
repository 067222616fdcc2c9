import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

MANAGE = Path(__file__).resolve().parents[3] / "manage.py"


class Command(BaseCommand):
    help = (
        "Run a manage.py command and start it again whenever it exits, with back-off "
        "(for `make run`, where honcho alone would stop everything). SIGTERM/SIGINT are passed "
        "on and end both. Example: manage.py supervise rqworker payments --worker-class ..."
    )

    def add_arguments(self, parser):
        parser.add_argument("--longest-wait", type=float, default=30.0, help="longest pause between restarts")
        parser.add_argument("command", nargs=argparse.REMAINDER, help="the manage.py command and its arguments")

    def handle(self, *args, command, longest_wait, **options):
        if not command:
            raise CommandError("Name the manage.py command to supervise.")
        stopping = False
        child: subprocess.Popen | None = None

        def stop(signum, _frame):
            nonlocal stopping
            stopping = True
            if child is not None and child.poll() is None:
                child.send_signal(signum)

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, stop)
        failures = 0
        while not stopping:
            started = time.monotonic()
            child = subprocess.Popen([sys.executable, str(MANAGE), *command])  # noqa: S603 - our own manage.py
            code = child.wait()
            if stopping:
                break
            # A process that ran a while had a one-off failure: start again at once.
            failures = 0 if time.monotonic() - started > 60 else failures + 1
            wait = min(longest_wait, 2.0 ** (failures - 1)) if failures else 0.5
            name = " ".join(command)
            self.stderr.write(f"supervise: `{name}` exited with code {code}; starting it again in {wait:g} s")
            resume_at = time.monotonic() + wait
            while not stopping and time.monotonic() < resume_at:
                time.sleep(0.1)
        if child is not None and child.poll() is None:
            child.wait()
