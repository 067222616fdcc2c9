"""The ledger's permissions for the staff roles (groups created by payments). The migration
keeps its own frozen copy; this one restores them where a test flushed the tables."""

from django.contrib.auth.models import Group, Permission

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
ROLES: dict[str, list[str]] = {
    "Operators": [],
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
    "Viewers": [],
}


def ensure_ledger_roles() -> None:
    for name, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        for codename in VIEW + codenames:
            group.permissions.add(Permission.objects.get(content_type__app_label="ledger", codename=codename))
