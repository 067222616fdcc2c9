from django.apps import AppConfig


class LedgerConfig(AppConfig):
    name = "ledger"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from ledger import cron
        from ledger.receivers import connect_receivers

        connect_receivers()
        cron.register()
