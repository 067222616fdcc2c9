"""The seam through which other apps add to portal pages. Payments cannot import
notifications, so notifications connects receivers here:

- `dashboard_attention` (kwargs: merchant, membership): return a list of AttentionItem.
- `payment_page_sections` (kwargs: request, merchant, membership, payment): return HTML
  rendered from the receiver's own template (autoescaped there), or "".
"""

from typing import cast

from django.dispatch import Signal
from django.utils.safestring import SafeString

from payments.models import Membership, Merchant, Payment
from payments.portal.reports import AttentionItem

dashboard_attention = Signal()
payment_page_sections = Signal()


def contributed_attention(*, merchant: Merchant, membership: Membership) -> list[AttentionItem]:
    items: list[AttentionItem] = []
    for _receiver, response in dashboard_attention.send(sender=Merchant, merchant=merchant, membership=membership):
        # django-stubs types a receiver's answer as a string; these receivers answer lists.
        items.extend(item for item in cast(list[AttentionItem], response or []) if item.count)
    return items


def contributed_payment_sections(request, *, payment: Payment) -> list[SafeString]:
    responses = payment_page_sections.send(
        sender=Payment, request=request, merchant=request.merchant, membership=request.membership, payment=payment
    )
    # Only template output is trusted: a receiver returning a plain str is not rendered as HTML.
    return [html for _receiver, html in responses if isinstance(html, SafeString) and html]
