from contextlib import contextmanager
from contextvars import ContextVar

from django.dispatch import Signal

# Sent inside the transaction of every payment status change, after its PaymentEvent is
# written. Keyword arguments: payment, event, from_status, to_status.
payment_status_changed = Signal()

# Sent inside the transaction of every refund status change. Keyword arguments: refund,
# event, from_status, to_status.
refund_status_changed = Signal()


# --- receivers' work in bulk -------------------------------------------------------------------
# A service that changes many payments at once (payments.bulk, payments.batch) sends each
# payment's signal inside `receivers_batched()`; a receiver that can do its work for many
# payments at once hands it to `run_batched(run_many, item)`: run_many([item]) at once outside
# such a block, else once with every item of the block at its end, still in the transaction
# (nothing runs if the block raised). Each receiver stays correct when called one at a time.

_batched: ContextVar[dict | None] = ContextVar("payments_receivers_batched", default=None)


@contextmanager
def receivers_batched():
    pending: dict = {}
    token = _batched.set(pending)
    try:
        yield
    finally:
        _batched.reset(token)
    for run_many, items in pending.values():
        run_many(items)


def run_batched(run_many, item) -> None:
    pending = _batched.get()
    if pending is None:
        run_many([item])
    else:
        pending.setdefault(run_many, (run_many, []))[1].append(item)
