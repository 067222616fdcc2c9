from django.dispatch import Signal

# Sent inside the transaction of every payout status change, after its PayoutEvent is
# written. Keyword arguments: payout, event, from_status, to_status.
payout_status_changed = Signal()
