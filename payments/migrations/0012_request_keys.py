"""Money-moving commands are idempotent in the database: refunds and manual settlement
requests keep the key of the request that made them, unique per payment. Rows made before
keep a key of their own (`legacy:<public id>` / `legacy:<id>`), so no old row matches a new
form's key."""

from django.db import migrations, models
from django.db.models import CharField, Value
from django.db.models.functions import Cast, Concat


def backfill_request_keys(apps, schema_editor):
    Refund = apps.get_model("payments", "Refund")
    SettlementRequest = apps.get_model("payments", "SettlementRequest")
    # One UPDATE per table, whatever the number of rows.
    Refund.objects.filter(request_key__isnull=True).update(request_key=Concat(Value("legacy:"), "public_id"))
    SettlementRequest.objects.filter(request_key__isnull=True).update(
        request_key=Concat(Value("legacy:"), Cast("id", output_field=CharField()))
    )


class Migration(migrations.Migration):
    dependencies = [("payments", "0011_search_prefixes")]

    operations = [
        migrations.AddField(
            model_name="refund",
            name="request_key",
            field=models.CharField(editable=False, max_length=100, null=True),
        ),
        migrations.AddField(
            model_name="settlementrequest",
            name="request_key",
            field=models.CharField(editable=False, max_length=100, null=True),
        ),
        migrations.RunPython(backfill_request_keys, migrations.RunPython.noop, elidable=True),
        migrations.AlterField(
            model_name="refund",
            name="request_key",
            field=models.CharField(
                editable=False,
                help_text="The key of the request that asked for it: the same form posted again finds this refund.",
                max_length=100,
            ),
        ),
        migrations.AlterField(
            model_name="settlementrequest",
            name="request_key",
            field=models.CharField(
                editable=False,
                help_text="The key of the request that asked for it: the same form posted again finds this request.",
                max_length=100,
            ),
        ),
        migrations.AddConstraint(
            model_name="refund",
            constraint=models.UniqueConstraint(fields=("payment", "request_key"), name="refund_request_key_per_payment"),
        ),
        migrations.AddConstraint(
            model_name="settlementrequest",
            constraint=models.UniqueConstraint(
                fields=("payment", "request_key"), name="settlement_request_key_per_payment"
            ),
        ),
    ]
