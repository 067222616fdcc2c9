from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from notifications import home, retention
        from notifications.receivers import connect_receivers

        connect_receivers()
        home.register()
        retention.register()
