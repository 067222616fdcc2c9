from django.apps import AppConfig


class ReconciliationConfig(AppConfig):
    name = "reconciliation"
    verbose_name = "Reconciliation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from backoffice.periodic import register_periodic
        from reconciliation import cron, home

        cron.register()
        home.register()
        register_periodic(home.open_exceptions_refresh, interval_seconds=300, name="reconciliation_open_figures")
