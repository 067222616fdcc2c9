import io
from datetime import timedelta

import pytest
from django.utils import timezone

from reconciliation.ingest import settlement_file_ingest
from tests.factories import MerchantFactory, UserFactory
from tests.reconciliation.daygen import generate_day

PROCESSOR = "simulated"


@pytest.fixture
def finance(db):
    return UserFactory(username="fiona-finance", roles=["Finance"])


@pytest.fixture
def past_day():
    """A processor day old enough for records missing from the report to be flagged."""
    return (timezone.now() - timedelta(days=5)).date()


@pytest.fixture
def make_day(db, finance, past_day):
    """Generate our records and the processor's report of a day (see daygen)."""

    def make(**options):
        merchants = [MerchantFactory(slug="recon-a"), MerchantFactory(slug="recon-b")]
        options.setdefault("day", past_day)
        return generate_day(merchants=merchants, requested_by=finance, **options)

    return make


def ingest(content: bytes, **options):
    options.setdefault("processor", PROCESSOR)
    options.setdefault("source", "upload")
    return settlement_file_ingest(stream=io.BytesIO(content), **options)
