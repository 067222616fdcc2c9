import time

import django_rq
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from redis.exceptions import RedisError


class Command(BaseCommand):
    help = "Wait until the database and Redis answer (used by the Procfile at start-up)."

    def add_arguments(self, parser):
        parser.add_argument("--timeout", type=float, default=30.0)

    def handle(self, *args, timeout, **options):
        deadline = time.monotonic() + timeout
        while True:
            try:
                django_rq.get_connection("default").ping()
                connection.ensure_connection()
                return
            except (RedisError, OSError, Exception) as error:  # noqa: BLE001 - any failure means "not yet"
                if time.monotonic() > deadline:
                    raise CommandError(f"services not ready after {timeout}s: {error}") from error
                time.sleep(0.2)
