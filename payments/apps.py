from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from backoffice.metrics import register_gauges
        from backoffice.periodic import register_periodic
        from backoffice.retention import RetentionPolicy, register_retention
        from payments import home
        from payments.figures import payment_figures_refresh, payment_status_gauges
        from payments.services.exports import expired_exports_before, exports_delete

        home.register()
        register_retention(
            RetentionPolicy(
                name="payments.expired_exports",
                what="export files and their rows past their expiry (EXPORT_RETENTION_HOURS after written)",
                horizon_setting=None,
                candidates=expired_exports_before,
                delete=exports_delete,
            )
        )
        register_gauges(payment_status_gauges)
        # Today and yesterday every minute; the whole month once an hour, for late changes
        # (an unknown payment settled days later, a refund of an old payment).
        register_periodic(payment_figures_refresh, interval_seconds=60, name="payment_figures", kwargs={"days": 2})
        register_periodic(
            payment_figures_refresh, interval_seconds=3600, name="payment_figures_month", kwargs={"days": 32}
        )
