"""The merchant's lists as exports read them: the payments list with its filters, and the
refunds of those payments. Used by the portal's views and, for large exports, by the job that
writes the file (payments.services.exports) with the filters saved on the Export."""

from django.contrib.contenttypes.models import ContentType
from django.db.models import QuerySet
from django.http import QueryDict

from backoffice.models import Job
from payments.models import Export, Merchant, Payment, Refund
from payments.portal.forms import PaymentFilterForm


def merchant_payment_filters(*, merchant: Merchant, query: QueryDict | dict) -> PaymentFilterForm:
    return PaymentFilterForm(query)


def merchant_list(*, merchant: Merchant, kind: str, query: QueryDict | dict) -> QuerySet:
    """Only this merchant's rows: the filters narrow the merchant's own payments, never widen them."""
    if isinstance(query, dict) and not isinstance(query, QueryDict):
        query = query_dict(query)
    payments = merchant_payment_filters(merchant=merchant, query=query).apply(Payment.objects.filter(merchant=merchant))
    if kind == "refunds":
        return Refund.objects.filter(payment__merchant=merchant, payment__in=payments)
    return payments


def query_dict(saved: dict) -> QueryDict:
    """A query string saved as {name: [values]} (JSON), back as a QueryDict."""
    query = QueryDict(mutable=True)
    for name, values in saved.items():
        query.setlist(name, [str(value) for value in values])
    return query


def saved_query(query: QueryDict) -> dict:
    return {name: query.getlist(name) for name in query if name != "page"}


def export_jobs(exports: list[Export]) -> dict[str, Job]:
    """The Job of each export, keyed by str(export.pk): one query for a page of exports."""
    jobs = Job.objects.filter(
        content_type=ContentType.objects.get_for_model(Export), object_id__in=[str(export.pk) for export in exports]
    ).order_by("created_at")
    return {job.object_id: job for job in jobs}
