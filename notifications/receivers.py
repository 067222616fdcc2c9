"""Receivers of the payments app's domain signals. Each runs inside the transaction of the
status change, so a notification and its delivery job exist exactly when the change commits.
Also hooked here, from NotificationsConfig.ready(): the merchant portal's seams (failing
webhooks on the dashboard, a payment's notifications on its page), drawn in notifications.portal.views.
"""

from collections.abc import Callable
from typing import Any

from django.dispatch import Signal

from ledger.signals import payout_status_changed
from notifications.delivery import notifications_create_for_event
from notifications.events import (
    PAYMENT_STATUS_EVENTS,
    PAYOUT_STATUS_EVENTS,
    REFUND_STATUS_EVENTS,
    payment_public_fields,
    payout_public_fields,
    refund_public_fields,
)
from notifications.portal.views import payment_notifications_section, webhook_attention
from payments.portal.sections import dashboard_attention, payment_page_sections
from payments.signals import payment_status_changed, refund_status_changed


def payment_status_changed_notify(sender, *, payment, event, from_status, to_status, **kwargs) -> None:
    event_type = PAYMENT_STATUS_EVENTS.get(to_status)
    if event_type is None:
        return
    notifications_create_for_event(
        merchant=payment.merchant,
        event_type=event_type,
        data={**payment_public_fields(payment), "previous_status": from_status},
        payment=payment,
        payment_event=event,
    )


def refund_status_changed_notify(sender, *, refund, event, from_status, to_status, **kwargs) -> None:
    event_type = REFUND_STATUS_EVENTS.get(to_status)
    if event_type is None:
        return
    notifications_create_for_event(
        merchant=refund.payment.merchant,
        event_type=event_type,
        data=refund_public_fields(refund),
        payment=refund.payment,
        refund=refund,
    )


def payout_status_changed_notify(sender, *, payout, event, from_status, to_status, **kwargs) -> None:
    event_type = PAYOUT_STATUS_EVENTS.get(to_status)
    if event_type is None:
        return
    notifications_create_for_event(
        merchant=payout.merchant, event_type=event_type, data=payout_public_fields(payout), payout=payout
    )


# (signal, receiver, dispatch_uid): one line per hooked signal.
HOOKS: list[tuple[Signal, Callable[..., Any], str]] = [
    (payment_status_changed, payment_status_changed_notify, "notifications.payment_status_changed"),
    (refund_status_changed, refund_status_changed_notify, "notifications.refund_status_changed"),
    (payout_status_changed, payout_status_changed_notify, "notifications.payout_status_changed"),
    (dashboard_attention, webhook_attention, "notifications.portal.views.webhook_attention"),
    (payment_page_sections, payment_notifications_section, "notifications.portal.views.payment_notifications_section"),
]


def connect_receivers() -> None:
    for signal, receiver, dispatch_uid in HOOKS:
        signal.connect(receiver, dispatch_uid=dispatch_uid)
