"""No staff role sees merchants' signing secrets by default: with a secret, anyone can sign
a webhook the merchant would trust. A superuser grants view_webhook_secret to a person when
a merchant needs help, and the grant shows in the user's history."""

from django.db import migrations


def revoke_secret_view(apps, schema_editor):
    Permission = apps.get_model("auth", "Permission")
    permission = Permission.objects.filter(content_type__app_label="notifications", codename="view_webhook_secret")
    for group in apps.get_model("auth", "Group").objects.filter(
        name__in=["Operators", "Finance", "Approvers", "Viewers"]
    ):
        group.permissions.remove(*permission)


class Migration(migrations.Migration):
    dependencies = [("notifications", "0004_endpoint_url_unique")]
    operations = [migrations.RunPython(revoke_secret_view, migrations.RunPython.noop)]
