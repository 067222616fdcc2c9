"""Renames only: ResolutionRequest becomes SettlementRequest (table, field `resolve_to` ->
`settle_as`, related name, constraint names), its permissions and the audit actions follow.
Rows, values and constraints' conditions are unchanged."""

from django.db import migrations, models

CONSTRAINTS = [
    # (old name, new name, is a unique index)
    ("resolution_status_valid", "settlement_status_valid", False),
    ("resolution_target_valid", "settlement_target_valid", False),
    ("resolution_decider_not_requester", "settlement_decider_not_requester", False),
    ("one_open_resolution_per_payment", "one_open_settlement_per_payment", True),
]
PERMISSIONS = [
    # (old codename, new codename, new name)
    ("request_resolution", "request_settlement", "Can ask to settle an unknown payment by hand"),
    ("approve_resolution", "approve_settlement", "Can approve or reject a manual settlement asked by someone else"),
    ("add_resolutionrequest", "add_settlementrequest", "Can add manual settlement request"),
    ("change_resolutionrequest", "change_settlementrequest", "Can change manual settlement request"),
    ("delete_resolutionrequest", "delete_settlementrequest", "Can delete manual settlement request"),
    ("view_resolutionrequest", "view_settlementrequest", "Can view manual settlement request"),
]
AUDIT_ACTIONS = [
    ("resolution_request", "settlement_request"),
    ("resolution_approve", "settlement_approve"),
    ("resolution_reject", "settlement_reject"),
]
TABLE = "payments_settlementrequest"


def rename_constraints(apps, schema_editor, backwards=False):
    # PostgreSQL renames in place. SQLite (the laptop default) keeps the old names in the
    # table's SQL, which it never looks up by name: its constraint changes rebuild the table.
    if schema_editor.connection.vendor != "postgresql":
        return
    quote = schema_editor.quote_name
    for old, new, is_index in CONSTRAINTS:
        old, new = (new, old) if backwards else (old, new)
        if is_index:
            schema_editor.execute(f"ALTER INDEX {quote(old)} RENAME TO {quote(new)}")
        else:
            schema_editor.execute(f"ALTER TABLE {quote(TABLE)} RENAME CONSTRAINT {quote(old)} TO {quote(new)}")


def rename_records(apps, schema_editor, backwards=False):
    Permission = apps.get_model("auth", "Permission")
    AuditEntry = apps.get_model("backoffice", "AuditEntry")
    for old, new, name in PERMISSIONS:
        old, new = (new, old) if backwards else (old, new)
        Permission.objects.filter(content_type__app_label="payments", codename=old).update(codename=new, name=name)
    for old, new in AUDIT_ACTIONS:
        old, new = (new, old) if backwards else (old, new)
        AuditEntry.objects.filter(action=old).update(action=new)


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("backoffice", "0001_initial"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("payments", "0007_settlement_verbose_name"),
    ]

    operations = [
        migrations.RenameModel("ResolutionRequest", "SettlementRequest"),
        migrations.RenameField("settlementrequest", "resolve_to", "settle_as"),
        migrations.AlterField(
            model_name="settlementrequest",
            name="payment",
            field=models.ForeignKey(
                on_delete=models.deletion.PROTECT, related_name="settlement_requests", to="payments.payment"
            ),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                *[migrations.RemoveConstraint("settlementrequest", old) for old, _new, _index in CONSTRAINTS],
                migrations.AddConstraint(
                    model_name="settlementrequest",
                    constraint=models.CheckConstraint(
                        condition=models.Q(("status__in", ["requested", "approved", "rejected"])),
                        name="settlement_status_valid",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="settlementrequest",
                    constraint=models.CheckConstraint(
                        condition=models.Q(("settle_as__in", ["succeeded", "failed"])),
                        name="settlement_target_valid",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="settlementrequest",
                    constraint=models.CheckConstraint(
                        condition=models.Q(
                            ("decided_by__isnull", True),
                            models.Q(("decided_by", models.F("requested_by")), _negated=True),
                            _connector="OR",
                        ),
                        name="settlement_decider_not_requester",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="settlementrequest",
                    constraint=models.UniqueConstraint(
                        condition=models.Q(("status", "requested")),
                        fields=("payment",),
                        name="one_open_settlement_per_payment",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunPython(
                    rename_constraints, lambda apps, schema_editor: rename_constraints(apps, schema_editor, True)
                ),
            ],
        ),
        migrations.AlterModelOptions(
            name="payment",
            options={
                "ordering": ["-created_at"],
                "permissions": [
                    ("process_payment", "Can send a pending payment to the gateway now"),
                    ("retry_payment", "Can retry a failed payment"),
                    ("cancel_payment", "Can cancel a pending payment"),
                    ("request_refund", "Can request a refund"),
                    ("approve_refund", "Can approve or reject a refund requested by someone else"),
                    ("request_settlement", "Can ask to settle an unknown payment by hand"),
                    ("approve_settlement", "Can approve or reject a manual settlement asked by someone else"),
                ],
            },
        ),
        migrations.RunPython(rename_records, lambda apps, schema_editor: rename_records(apps, schema_editor, True)),
    ]
