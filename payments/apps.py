from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from backoffice.metrics import register_gauges
        from backoffice.periodic import register_periodic
        from payments import home
        from payments.figures import payment_figures_refresh, payment_status_gauges

        home.register()
        register_gauges(payment_status_gauges)
        # Today and yesterday every minute; the whole month once an hour, for late changes
        # (an unknown payment settled days later, a refund of an old payment).
        register_periodic(payment_figures_refresh, interval_seconds=60, name="payment_figures", kwargs={"days": 2})
        register_periodic(
            payment_figures_refresh, interval_seconds=3600, name="payment_figures_month", kwargs={"days": 32}
        )
