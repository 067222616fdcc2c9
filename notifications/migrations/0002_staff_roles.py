"""Notification permissions for the staff roles created by payments.0002_staff_roles."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEW = ["view_webhookendpoint", "view_notification", "view_deliveryattempt"]
ROLES = {
    "Operators": [
        "add_webhookendpoint", "change_webhookendpoint", "send_test_webhook", "rotate_webhook_secret",
        "enable_webhookendpoint", "view_webhook_secret", "resend_notification",
    ],
    "Finance": [],
    "Approvers": [],
    "Viewers": [],
}


def grant(apps, schema_editor):
    app_config = apps.get_app_config("notifications")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(
            *Permission.objects.filter(content_type__app_label="notifications", codename__in=VIEW + codenames)
        )


def revoke(apps, schema_editor):
    Permission = apps.get_model("auth", "Permission")
    for group in apps.get_model("auth", "Group").objects.filter(name__in=ROLES):
        group.permissions.remove(*Permission.objects.filter(content_type__app_label="notifications"))


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0001_initial"),
        ("payments", "0002_staff_roles"),
    ]
    operations = [migrations.RunPython(grant, revoke)]
