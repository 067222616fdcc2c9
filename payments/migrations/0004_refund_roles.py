"""Permissions of refunds and manual settlements for the staff roles."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ADD = {
    "Operators": ["request_resolution"],
    "Finance": ["request_refund"],
    "Approvers": ["approve_refund", "approve_resolution"],
}
VIEW = ["view_refund", "view_refundevent", "view_resolutionrequest"]


def grant(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name in ("Operators", "Finance", "Approvers", "Viewers"):
        group, _ = Group.objects.get_or_create(name=name)
        for codename in VIEW + ADD.get(name, []):
            group.permissions.add(Permission.objects.get(content_type__app_label="payments", codename=codename))


class Migration(migrations.Migration):
    dependencies = [("payments", "0003_refunds")]
    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
