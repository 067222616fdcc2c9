"""Search that picks the column from the shape of the term, so that each search reads one
index instead of every row of several columns (Django's `search_fields` runs
`UPPER(col) LIKE '%term%'` on all of them, plus DISTINCT across a join).

| the term looks like | searched | index |
|---|---|---|
| a payment id (`pay_…`) | `public_id`: equal when whole, else starts with | Django's `_like` index |
| a refund id (`re_…`) | its payment (or the refund, in the refunds list) | unique / pattern |
| a whole e-mail address | `customer_email`, equal ignoring case | btree on UPPER() |
| part of an e-mail or a domain (`@`, `shop.example`) | `customer_email` contains | pg_trgm GIN |
| a processor reference (`ch_…`, `sim_ch_…`) | an attempt's `gateway_reference` starts with | pattern |
| anything else | `merchant_reference` starts with it, or `idempotency_key`; if none, contains | pattern, pg_trgm |

The admin's lists and the merchant portal share it; merchants never search processor
references (those stay inside Paydesk).
"""

import re
from enum import Enum

from django.db.models import Exists, OuterRef, Q, QuerySet

from payments.models import PaymentAttempt

ID_RANDOM_LENGTH = 24  # payments.models._random_id
PAYMENT_ID = re.compile(r"pay_[A-Za-z0-9]{0,24}")
REFUND_ID = re.compile(r"re_[A-Za-z0-9]{0,24}")
# The simulated gateway's (sim_ch_, sim_crash_) and the processor service's (ch_) charges;
# refunds: sim_re_, rf_.
CHARGE_REFERENCE = re.compile(r"(sim_)?(ch|crash)_[A-Za-z0-9]*")
REFUND_REFERENCE = re.compile(r"(sim_re|rf)_[A-Za-z0-9]*")
EMAIL = re.compile(r"[^\s@]*@[^\s@]*|[\w.-]*\w\.[A-Za-z]{2,}")
WHOLE_EMAIL = re.compile(r"[^\s@]+@[^\s@]+\.[A-Za-z]{2,}")
MAX_TERM = 100


class Shape(Enum):
    PAYMENT_ID = "payment id"
    REFUND_ID = "refund id"
    EMAIL = "e-mail"
    CHARGE_REFERENCE = "processor reference"
    REFUND_REFERENCE = "processor refund reference"
    REFERENCE = "reference"


def term_shape(term: str) -> Shape:
    for pattern, shape in (
        (PAYMENT_ID, Shape.PAYMENT_ID),
        (REFUND_ID, Shape.REFUND_ID),
        (CHARGE_REFERENCE, Shape.CHARGE_REFERENCE),
        (REFUND_REFERENCE, Shape.REFUND_REFERENCE),
        (EMAIL, Shape.EMAIL),
    ):
        if pattern.fullmatch(term):
            return shape
    return Shape.REFERENCE


def _id_lookup(field: str, term: str) -> Q:
    whole = len(term) - term.index("_") - 1 == ID_RANDOM_LENGTH
    return Q(**{field: term}) if whole else Q(**{f"{field}__startswith": term})


def payment_search(payments: QuerySet, term: str, *, staff: bool) -> QuerySet:
    """The payments whose column for this term's shape matches it (see the module's table).
    `staff`: processor references are searched too."""
    term = term.strip()[:MAX_TERM]
    if not term:
        return payments
    shape = term_shape(term)
    if shape is Shape.PAYMENT_ID:
        return payments.filter(_id_lookup("public_id", term))
    if shape is Shape.REFUND_ID:
        return payments.filter(pk__in=_refunds_by_id(term).values("payment_id"))
    if shape is Shape.EMAIL:
        if WHOLE_EMAIL.fullmatch(term):
            # Equality on the UPPER(customer_email) index: a whole address is not a contains
            # search (its trigrams, "com", "exa", are in every row).
            return payments.filter(customer_email__iexact=term)
        return payments.filter(customer_email__icontains=term)
    if shape is Shape.CHARGE_REFERENCE and staff:
        attempts = PaymentAttempt.objects.filter(payment=OuterRef("pk"), gateway_reference__startswith=term)
        return payments.filter(Exists(attempts))
    # References that start with the term, on a btree; only if there are none, those that
    # contain it, on the trigram index (slower when the term is made of common trigrams).
    starting = payments.filter(Q(merchant_reference__startswith=term) | Q(idempotency_key=term))
    if starting.exists():
        return starting
    return payments.filter(merchant_reference__icontains=term)


def _refunds_by_id(term: str) -> QuerySet:
    from payments.models import Refund

    return Refund.objects.filter(_id_lookup("public_id", term))


def refund_search(refunds: QuerySet, term: str) -> QuerySet:
    """Refunds by their id, their payment's id, the processor's refund reference, or the
    payment's reference."""
    term = term.strip()[:MAX_TERM]
    if not term:
        return refunds
    shape = term_shape(term)
    if shape is Shape.REFUND_ID:
        return refunds.filter(_id_lookup("public_id", term))
    if shape is Shape.PAYMENT_ID:
        return refunds.filter(_id_lookup("payment__public_id", term))
    if shape is Shape.REFUND_REFERENCE:
        return refunds.filter(gateway_reference__startswith=term)
    return refunds.filter(payment__merchant_reference__icontains=term)
