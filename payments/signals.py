from django.dispatch import Signal

# Sent inside the transaction of every payment status change, after its PaymentEvent is
# written. Keyword arguments: payment, event, from_status, to_status.
payment_status_changed = Signal()

# Sent inside the transaction of every refund status change. Keyword arguments: refund,
# event, from_status, to_status.
refund_status_changed = Signal()
