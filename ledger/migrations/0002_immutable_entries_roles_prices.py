"""PostgreSQL enforces the ledger's two rules: entries and transactions are never updated or
deleted, and every transaction's entries sum to zero per currency (checked at commit, when all
its entries are in). Also: the ledger's permissions for the staff roles, and default prices."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

IMMUTABLE_AND_BALANCED = """
CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger % rows are immutable: post a correction that names the transaction', TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END $$;
CREATE TRIGGER ledger_entry_immutable BEFORE UPDATE OR DELETE ON ledger_entry
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_transaction_immutable BEFORE UPDATE OR DELETE ON ledger_transaction
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();

CREATE FUNCTION ledger_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    unbalanced record;
BEGIN
    SELECT a.currency, SUM(e.amount_minor) AS total INTO unbalanced
    FROM ledger_entry e JOIN ledger_account a ON a.id = e.account_id
    WHERE e.transaction_id = NEW.transaction_id
    GROUP BY a.currency HAVING SUM(e.amount_minor) <> 0
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % does not balance in %: off by %',
            NEW.transaction_id, unbalanced.currency, unbalanced.total
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER ledger_entry_balanced AFTER INSERT ON ledger_entry
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced();
"""
DROP = """
DROP TRIGGER ledger_entry_balanced ON ledger_entry;
DROP FUNCTION ledger_check_balanced();
DROP TRIGGER ledger_transaction_immutable ON ledger_transaction;
DROP TRIGGER ledger_entry_immutable ON ledger_entry;
DROP FUNCTION ledger_refuse_change();
"""

VIEW = [
    "view_account",
    "view_transaction",
    "view_entry",
    "view_payout",
    "view_payoutevent",
    "view_price",
    "view_merchantterms",
    "view_capturedfunds",
    "view_driftcheck",
]
ADD = {
    "Finance": [
        "request_payout",
        "settle_payout",
        "post_adjustment",
        "run_drift_check",
        "add_price",
        "change_price",
        "add_merchantterms",
        "change_merchantterms",
    ],
    "Approvers": ["approve_payout"],
}
# Platform defaults per currency (rate in basis points, fixed part in minor units); a
# merchant's own price overrides them, and currencies not listed use LEDGER_DEFAULT_FEE_RATE_BPS.
DEFAULT_PRICES = [("EUR", 140, 25), ("GBP", 150, 20), ("USD", 290, 30), ("CHF", 190, 30), ("JPY", 360, 0)]


def _run_on_postgresql(schema_editor, sql: str) -> None:
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(sql)  # no parameters: the "%" of RAISE stays as written


def triggers(apps, schema_editor):
    _run_on_postgresql(schema_editor, IMMUTABLE_AND_BALANCED)


def drop_triggers(apps, schema_editor):
    _run_on_postgresql(schema_editor, DROP)


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
            group.permissions.add(Permission.objects.get(content_type__app_label="ledger", codename=codename))


def prices(apps, schema_editor):
    Price = apps.get_model("ledger", "Price")
    for currency, rate_bps, fixed_minor in DEFAULT_PRICES:
        Price.objects.get_or_create(merchant=None, currency=currency, defaults={"rate_bps": rate_bps, "fixed_minor": fixed_minor})


class Migration(migrations.Migration):
    dependencies = [("ledger", "0001_initial"), ("payments", "0004_refund_roles")]
    operations = [
        migrations.RunPython(triggers, drop_triggers),
        migrations.RunPython(grant, migrations.RunPython.noop),
        migrations.RunPython(prices, migrations.RunPython.noop),
    ]
