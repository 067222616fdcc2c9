"""Reconciliation's permissions for the staff roles: Finance uploads reports and resolves
exceptions, Approvers approve adjustments, everyone who reads payments reads reconciliation."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEW = [
    "view_settlementfile", "view_settlementline", "view_discrepancy", "view_matchingrun",
]
ROLES = {
    "Operators": [],
    "Finance": ["add_settlementfile", "resolve_discrepancy"],
    "Approvers": ["approve_adjustment"],
    "Viewers": [],
}


def grant(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(
            *Permission.objects.filter(content_type__app_label="reconciliation", codename__in=VIEW + codenames)
        )


def revoke(apps, schema_editor):
    Permission = apps.get_model("auth", "Permission")
    for group in apps.get_model("auth", "Group").objects.filter(name__in=ROLES):
        group.permissions.remove(*Permission.objects.filter(content_type__app_label="reconciliation"))


class Migration(migrations.Migration):
    dependencies = [
        ("reconciliation", "0001_initial"),
        ("payments", "0002_staff_roles"),
    ]
    operations = [migrations.RunPython(grant, revoke)]
