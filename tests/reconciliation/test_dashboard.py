"""Open exceptions over time on the operations dashboard: a daily snapshot, drawn from at most
30 days of pre-aggregated rows."""

from datetime import timedelta

import pytest

from backoffice.figures import day_start
from backoffice.models import Figure
from reconciliation.home import OPEN_SERIES, open_exceptions_refresh
from reconciliation.matching import match_day
from reconciliation.models import Discrepancy
from reconciliation.services import discrepancy_accept
from tests.factories import UserFactory
from tests.helpers import logged_in
from tests.reconciliation.conftest import PROCESSOR, ingest

pytestmark = pytest.mark.needs_postgres

CHART = "/admin/dashboard/charts/reconciliation-open.svg"


def test_the_dashboard_charts_the_open_exceptions_of_each_day(make_day, finance):
    generated = make_day(payments=100, per_kind=1)
    ingest(generated.csv_bytes)
    match_day(processor=PROCESSOR, day=generated.day)
    yesterday = day_start() - timedelta(days=1)
    Figure.objects.create(series=OPEN_SERIES, bucket=yesterday, key="total", value=3)
    Figure.objects.create(series=OPEN_SERIES, bucket=yesterday, key="duplicate", value=3)

    open_exceptions_refresh()
    discrepancy_accept(discrepancy=Discrepancy.objects.filter(status="open").first(), actor=finance, reason="ok")
    open_exceptions_refresh()  # today's snapshot is replaced, yesterday's stays

    today = dict(Figure.objects.filter(series=OPEN_SERIES, bucket=day_start()).values_list("key", "value"))
    assert today["total"] == Discrepancy.objects.filter(status="open").count() == len(generated.all_injected()) - 1
    assert Figure.objects.get(series=OPEN_SERIES, bucket=yesterday, key="total").value == 3
    client = logged_in(finance)
    home = client.get("/admin/").content.decode()
    assert "reconciliation-open" in home
    svg = client.get(CHART)
    assert svg.status_code == 200 and svg["Content-Type"] == "image/svg+xml"
    assert b"Duplicate" in svg.content and b"Fee mismatch" in svg.content and b"<script" not in svg.content


def test_the_chart_is_for_those_who_may_see_the_queue(db):
    nobody = logged_in(UserFactory(username="no-role"))
    assert nobody.get(CHART).status_code == 404
    assert "reconciliation-open" not in nobody.get("/admin/").content.decode()
