"""Pages of lists that grow without bound (payments, jobs, refunds), without COUNT(*) of a
whole table on every page view.

`CappedPaginator` counts only as far as it needs: the requested page plus `LOOKAHEAD_PAGES`
more, then stops reading (`SELECT COUNT(*) FROM (SELECT … LIMIT n)`). Up to that many rows
the count is exact; past it `capped` is true and the list says "N+". Page 500 of a million
payments costs an index range of 500 pages plus the look-ahead, not the table.
"""

from functools import cached_property
from typing import cast

from django.core.paginator import Paginator
from django.db.models import QuerySet

LOOKAHEAD_PAGES = 3


class CappedPaginator(Paginator):
    def __init__(self, object_list, per_page, *, page_number=1, lookahead_pages: int = LOOKAHEAD_PAGES, **kwargs):
        super().__init__(object_list, per_page, **kwargs)
        try:
            self.requested_page = max(1, int(page_number))
        except (TypeError, ValueError):
            self.requested_page = 1
        self.lookahead_pages = lookahead_pages
        self.capped = False

    @cached_property
    def count(self) -> int:
        limit = (self.requested_page + self.lookahead_pages) * self.per_page
        # Without ordering PostgreSQL stops at the limit by whatever index or scan is cheapest.
        rows = cast(QuerySet, self.object_list)  # a queryset: what these lists page through
        counted = rows.order_by()[: limit + 1].count()
        self.capped = counted > limit
        return min(counted, limit)
