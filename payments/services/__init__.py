"""Every write that matters to a payment, by concern: `payments` (create, process, retry,
cancel, gateway answers), `refunds`, `settlements` (unknown payments settled by hand).
`common` holds what they share. The names below are the public surface:
`from payments import services` then `services.payment_create(...)` works as before."""

from payments.services.payments import (
    PROCESS_JOB,
    RECOVER_JOB,
    payment_cancel,
    payment_charge_result_apply,
    payment_create,
    payment_enqueue_processing,
    payment_lookup_result_apply,
    payment_process_now,
    payment_processing_start,
    payment_retry,
    payments_create_many,
)
from payments.services.refunds import (
    RECOVER_REFUND_JOB,
    REFUND_JOB,
    RefundOutcomeUnknown,
    refund_approve,
    refund_lookup_result_apply,
    refund_processing_start,
    refund_reject,
    refund_request,
    refund_request_by_merchant,
    refund_result_apply,
)
from payments.services.settlements import settlement_approve, settlement_reject, settlement_request

__all__ = [
    "PROCESS_JOB",
    "RECOVER_JOB",
    "RECOVER_REFUND_JOB",
    "REFUND_JOB",
    "RefundOutcomeUnknown",
    "payment_cancel",
    "payment_charge_result_apply",
    "payment_create",
    "payment_enqueue_processing",
    "payment_lookup_result_apply",
    "payment_process_now",
    "payment_processing_start",
    "payment_retry",
    "payments_create_many",
    "refund_approve",
    "refund_lookup_result_apply",
    "refund_processing_start",
    "refund_reject",
    "refund_request",
    "refund_request_by_merchant",
    "refund_result_apply",
    "settlement_approve",
    "settlement_reject",
    "settlement_request",
]
