"""The merchant portal in a real browser: Debian's Chromium driven by Playwright against
live_server, with a real rqworker charging the payment and sending the refund.

Never `playwright install`: the browser is the `chromium` package (.ci/run installs it)."""

import os
import re
import shutil
from pathlib import Path

import pytest

# Playwright's sync API runs an event loop in the test's thread for the rest of the session,
# and Django refuses ORM calls from a thread with a running loop unless told this is fine
# (it is: the loop is idle while our synchronous code runs).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

from playwright.sync_api import Page, expect  # noqa: E402

from payments.models import Payment, Refund  # noqa: E402
from payments.states import PaymentStatus, RefundStatus  # noqa: E402
from tests.helpers import IN_CI, PASSWORD, merchant_user, wait_until  # noqa: E402  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM) and not IN_CI,
        reason="Debian's chromium is not installed (apt-get install -y chromium)",
    ),
]


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


class PageShots:
    """Screenshots of the main pages as the test passes them, written out only if it fails."""

    def __init__(self, page: Page, directory: Path):
        self.page, self.directory, self.shots = page, directory, []

    def take(self, name: str) -> None:
        self.shots.append((name, self.page.screenshot(full_page=True)))

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self.take("at-failure")
        except Exception:  # noqa: BLE001  the page may be gone; keep what we have
            pass
        for number, (name, image) in enumerate(self.shots, start=1):
            (self.directory / f"{number:02d}-{name}.png").write_bytes(image)


def test_merchant_logs_in_pays_watches_it_succeed_and_refunds(
    page: Page, live_server, start_worker, merchant, output_path
):
    merchant_user("olga-owner", merchant)
    start_worker()
    shots = PageShots(page, Path(output_path))
    page.set_default_timeout(15_000)
    try:
        # given: the log-in page
        page.goto(f"{live_server.url}/merchant/")
        expect(page).to_have_url(re.compile(r"/merchant/login/"))
        page.get_by_label("Username").fill("olga-owner")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", name=merchant.name)).to_be_visible()
        shots.take("dashboard")

        # when: a new payment
        page.get_by_role("navigation", name="Main").get_by_role("link", name="New payment").click()
        page.get_by_label("Amount").fill("42.50")
        page.get_by_label("Currency").select_option("EUR")
        page.get_by_label("Test token").select_option("tok_success")
        page.get_by_label("Customer e-mail").fill("ann@customer.example")
        page.get_by_label("Reference").fill("order-e2e-1")
        shots.take("new-payment")
        page.get_by_role("button", name="Create payment").click()

        # then: the worker charges it and the page shows it without a manual reload
        expect(page).to_have_url(re.compile(r"/merchant/payments/pay_\w+/$"))
        expect(page.locator("#payment-status")).to_have_text("Succeeded", timeout=30_000)
        expect(page.get_by_role("heading", name=re.compile("42.50 EUR"))).to_be_visible()
        expect(page.locator("#refund-remaining")).to_have_text("42.50 EUR")
        shots.take("payment-succeeded")
        payment = Payment.objects.get(merchant=merchant, merchant_reference="order-e2e-1")
        assert payment.status == PaymentStatus.SUCCEEDED and payment.amount_minor == 42_50

        # when: a partial refund, defaulting to what remains
        page.get_by_role("link", name="Refund", exact=True).click()
        expect(page.get_by_label("Amount")).to_have_value("42.50")
        page.get_by_label("Amount").fill("10.00")
        page.get_by_label("Reason").fill("one mug arrived broken")
        shots.take("refund-form")
        page.get_by_role("button", name="Request refund").click()

        # then: it is listed at once, and the worker sends it while the page watches
        expect(page.get_by_text("approved and on its way")).to_be_visible()
        refunds = page.locator("#refunds")
        expect(refunds).to_contain_text("10.00 EUR")
        expect(refunds).to_contain_text("one mug arrived broken")
        expect(page.locator("#payment-status")).to_have_text("Partially refunded", timeout=30_000)
        expect(refunds.locator(".status")).to_have_text("Succeeded")
        expect(page.locator("#refund-remaining")).to_have_text("32.50 EUR")
        shots.take("refunded")
        refund = wait_until(
            lambda: Refund.objects.filter(payment=payment, status=RefundStatus.SUCCEEDED).first(),
            message="the refund to succeed",
        )
        assert refund.amount_minor == 10_00

        # and the list shows the payment with its new status
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Payments").click()
        row = page.get_by_role("row", name=re.compile("order-e2e-1"))
        expect(row).to_contain_text("Partially refunded")
        shots.take("payments-list")
    except BaseException:
        shots.save()
        raise
