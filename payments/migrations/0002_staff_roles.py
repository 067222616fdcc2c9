"""Staff roles as Django groups. Later migrations add the permissions of later features."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ROLES = {
    "Operators": [
        "payments.process_payment", "payments.retry_payment", "payments.cancel_payment",
        "backoffice.requeue_job", "backoffice.cancel_job",
    ],
    "Finance": [],
    "Approvers": [],
    "Viewers": [],
}
VIEW = [
    "payments.view_merchant", "payments.view_payment", "payments.view_paymentattempt",
    "payments.view_paymentevent", "backoffice.view_job", "backoffice.view_auditentry",
]


def create_roles(apps, schema_editor):
    # Permissions are normally created after all migrations; make sure they exist now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        for dotted in VIEW + codenames:
            app_label, codename = dotted.split(".")
            group.permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0001_initial"),
        ("backoffice", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(create_roles, remove_roles)]
