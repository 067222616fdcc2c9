"""Logging: structlog over the standard library, so Django's, rq's and our own
`logging.getLogger(__name__)` lines all come out in one format with the bound context
(request_id, job_id, payment...). Imported by settings: no Django imports here."""

import logging

import structlog
import structlog.tracebacks

SHARED_PROCESSORS: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.stdlib.ExtraAdder(allow=("status_code",)),
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


class ForbiddenWithoutTraceback(logging.Filter):
    """Django logs a refused request (403) with the PermissionDenied traceback: the line is
    enough, the traceback only buries the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "status_code", None) in (403, 404):
            record.exc_info = None
            record.exc_text = None
        return True


def structured_logging(*, json_lines: bool, level: str) -> dict:
    """The LOGGING dict, after configuring structlog itself for structlog's own loggers."""
    structlog.configure(
        processors=[*SHARED_PROCESSORS, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    if json_lines:
        # Tracebacks as data, without local variables: they could hold secrets or customer data.
        tracebacks = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        renderer = [structlog.processors.ExceptionRenderer(tracebacks), structlog.processors.JSONRenderer()]
    else:
        renderer = [structlog.dev.ConsoleRenderer(colors=False, pad_event_to=40)]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"forbidden_without_traceback": {"()": ForbiddenWithoutTraceback}},
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
                "foreign_pre_chain": SHARED_PROCESSORS,
            }
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "structured",
                "filters": ["forbidden_without_traceback"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "WARNING"},
            # In JSON, each request's outcome is one line from django-structlog; on a laptop
            # runserver already prints one per request, so only problems come from here.
            "django_structlog": {"level": "INFO" if json_lines else "WARNING"},
            # rq's cron says "Enqueued job ..." at every tick: only problems on a laptop.
            "rq.cron": {"level": "INFO" if json_lines else "WARNING"},
            # Each delivered notification; the e-mail backend already says one line per e-mail.
            "notifications.delivery": {"level": "INFO" if json_lines else "WARNING"},
        },
    }
