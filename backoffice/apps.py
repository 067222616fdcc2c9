from django.apps import AppConfig
from django.conf import settings


class BackofficeConfig(AppConfig):
    name = "backoffice"
    verbose_name = "Back office"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.db.models.signals import pre_save

        from backoffice.card_numbers import refuse_card_numbers_on_save

        # Every model's save, ours filtered inside: a model added later is covered too.
        pre_save.connect(refuse_card_numbers_on_save, dispatch_uid="refuse_card_numbers")
        from backoffice import (
            home,
            retention,
            sessions,  # noqa: F401  (connects the log-in receiver)
        )
        from backoffice.figures import job_figures_refresh
        from backoffice.periodic import register_periodic

        home.register()
        register_periodic(job_figures_refresh, interval_seconds=60, name="job_figures", kwargs={"hours": 2})
        # Bounded growth: a few seconds of batched deletes per pass of the sweeper process.
        retention.register()
        register_periodic(
            retention.retention_pass, interval_seconds=settings.RETENTION_INTERVAL_SECONDS, name="retention"
        )
