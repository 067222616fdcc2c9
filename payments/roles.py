"""Staff roles (Django groups) and their permissions. The migration that creates them keeps
its own frozen copy; this one restores them where a test flushed the tables."""

from django.contrib.auth.models import Group, Permission

VIEW = [
    "payments.view_merchant",
    "payments.view_payment",
    "payments.view_paymentattempt",
    "payments.view_paymentevent",
    "payments.view_refund",
    "payments.view_refundevent",
    "payments.view_settlementrequest",
    "backoffice.view_job",
    "backoffice.view_auditentry",
]
ROLES: dict[str, list[str]] = {
    "Operators": [
        "payments.process_payment",
        "payments.retry_payment",
        "payments.cancel_payment",
        "backoffice.requeue_job",
        "backoffice.cancel_job",
        "payments.request_settlement",
    ],
    "Finance": ["payments.request_refund"],
    "Approvers": ["payments.approve_refund", "payments.approve_settlement"],
    "Viewers": [],
}


def ensure_roles() -> None:
    for name, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        for dotted in VIEW + codenames:
            app_label, codename = dotted.split(".")
            group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
