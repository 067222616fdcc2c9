"""The operations console in a real browser (Debian's Chromium via Playwright): an operator
logs in, reads the dashboard and its charts, goes from a "needs a person" line to the payment
in two clicks, presses a button on its page, and exports the list; screens are checked at
1400 px and at 390 px. Setup as in test_browser.py (never `playwright install`)."""

import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

from playwright.sync_api import Page, expect  # noqa: E402

from backoffice.models import AuditEntry, Job, JobStatus  # noqa: E402
from payments.models import Payment  # noqa: E402
from tests.e2e.test_browser import CHROMIUM, PageShots  # noqa: E402
from tests.factories import UserFactory  # noqa: E402
from tests.helpers import wait_until  # noqa: E402

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed"),
]
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    }


def horizontal_overflow(page: Page) -> int:
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")


def test_operator_acts_from_the_dashboard_with_a_button_and_exports(page: Page, live_server, make_payment, output_path):
    UserFactory(username="otto-operator", roles=["Operators"])
    orphan = make_payment(merchant_reference="order-orphan")
    Job.objects.filter(object_id=str(orphan.pk)).update(status=JobStatus.CANCELED)
    shots = PageShots(page, Path(output_path))
    page.set_default_timeout(15_000)
    page.set_viewport_size({"width": 1400, "height": 900})
    try:
        page.goto(f"{live_server.url}/admin/")
        page.get_by_label("Username").fill("otto-operator")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()

        # the dashboard: what needs a person, queue health, charts drawn as images
        expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
        expect(page.get_by_role("heading", name="Needs a person now")).to_be_visible()
        expect(page.get_by_role("heading", name="Queues and workers")).to_be_visible()
        charts = page.locator("img.chart")
        expect(charts.first).to_be_visible()
        # Polled from here: wait_for_function evaluates its text in the page, which the CSP refuses.
        wait_until(
            lambda: charts.evaluate_all("imgs => imgs.every(img => img.complete && img.naturalWidth > 0)"),
            timeout=15,
            message="every chart drawn",
        )
        assert horizontal_overflow(page) <= 0
        shots.take("dashboard-1400")

        # two clicks: the line, then the payment
        page.get_by_role("link", name=re.compile("Pending payments with no live job")).click()
        row = page.get_by_role("row", name=re.compile("order-orphan"))
        expect(row).to_be_visible()
        status_header = page.get_by_role("columnheader", name="Status")
        assert status_header.bounding_box()["x"] + status_header.bounding_box()["width"] <= 1400
        shots.take("payments-list-1400")
        row.get_by_role("link", name=orphan.public_id).click()

        # a button on the payment's page, its confirmation, the reason
        page.get_by_role("link", name="Process now").click()
        expect(page.get_by_text(orphan.public_id)).to_be_visible()
        page.get_by_label("Reason").fill("its job was canceled by mistake")
        shots.take("confirm-process-now")
        page.get_by_role("button", name="Yes, process").click()
        expect(page.get_by_text("1 queued")).to_be_visible()
        assert AuditEntry.objects.filter(action="payment_process", object_id=str(orphan.pk)).exists()
        assert Job.objects.filter(object_id=str(orphan.pk), status__in=["pending", "queued"]).exists()

        # the list, exported with its filter
        page.goto(f"{live_server.url}/admin/payments/payment/?status__exact=pending")
        with page.expect_download() as download:
            page.get_by_role("link", name="Export CSV").click()
        content = Path(download.value.path()).read_text()
        assert content.splitlines()[0].startswith("payment,created at (UTC),merchant")
        assert orphan.public_id in content
        assert len(content.splitlines()) == 1 + Payment.objects.filter(status="pending").count()

        # a phone: the dashboard reflows to one column without a sideways scroll
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{live_server.url}/admin/")
        expect(page.get_by_role("heading", name="Needs a person now")).to_be_visible()
        shots.take("dashboard-390")
        assert horizontal_overflow(page) <= 0
    except BaseException:
        shots.save()
        raise
