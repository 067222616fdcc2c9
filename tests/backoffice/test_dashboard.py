"""The admin's home page: each role sees what it can act on, every count links to the list of
exactly those rows, figures come pre-aggregated, and charts are script-free SVG."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from backoffice.dashboard import AttentionItem, register_card
from backoffice.figures import day_start, figures_read, job_figures_refresh
from backoffice.models import Figure, Job, JobStatus
from payments import services
from payments.figures import PAYMENT_SERIES, payment_figures_refresh
from payments.jobs import process_payment
from payments.models import Payment, new_request_key
from payments.states import PaymentStatus
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def approver(db):
    return UserFactory(username="ann-approver", roles=["Approvers"])


@pytest.fixture
def finance(db):
    return UserFactory(username="fred-finance", roles=["Finance"])


def logged_in(client, user):
    client.force_login(user)
    return client


def attention(response) -> dict[str, AttentionItem]:
    card = {card.name: context for card, context, _ in response.context["cards"]}
    return {item.label: item for item in card["backoffice.needs_person"]["items"]}


def home(client, user):
    response = logged_in(client, user).get("/admin/")
    assert response.status_code == 200
    return response


def orphan_pending_payment(make_payment) -> Payment:
    """A pending payment whose job was canceled: nothing will process it."""
    payment = make_payment()
    Job.objects.filter(object_id=str(payment.pk)).update(status=JobStatus.CANCELED)
    return payment


def test_operator_sees_pending_payments_with_no_live_job_linked_to_exactly_those(client, operator, make_payment):
    orphan = orphan_pending_payment(make_payment)
    make_payment()  # pending with its job: not orphaned

    item = attention(home(client, operator))["Pending payments with no live job"]

    assert item.count == 1
    listed = client.get(item.url)
    assert listed.status_code == 200
    assert [payment.pk for payment in listed.context["cl"].result_list] == [orphan.pk]


def test_operator_sees_failed_jobs_and_queue_health(client, operator, make_payment):
    payment = make_payment()
    Job.objects.filter(object_id=str(payment.pk)).update(status=JobStatus.FAILED)

    response = home(client, operator)

    item = attention(response)["Failed jobs"]
    assert item.count == 1 and item.severity == "error"
    assert client.get(item.url).context["cl"].result_count == 1
    assert b"Queues and workers" in response.content
    assert b"0 workers alive" in response.content


def test_approver_sees_refunds_awaiting_their_approval_not_their_own(client, approver, finance, make_payment, settings):
    settings.PAYMENTS_REFUND_APPROVAL_THRESHOLD = {"default": "0.01"}
    payment = make_payment(amount_minor=5000)
    process_payment(payment.pk)
    payment.refresh_from_db()
    services.refund_request(
        payment=payment, amount_minor=1000, reason="damaged", requested_by=finance, request_key=new_request_key("test")
    )

    items = attention(home(client, approver))

    assert items["Refunds awaiting my approval"].count == 1
    assert client.get(items["Refunds awaiting my approval"].url).context["cl"].result_count == 1
    assert "Pending payments with no live job" not in items
    assert "Refunds awaiting my approval" not in attention(home(client, finance))


def test_viewer_sees_figures_but_nothing_to_act_on(client, viewer, make_payment):
    orphan_pending_payment(make_payment)

    response = home(client, viewer)

    assert attention(response) == {}
    assert b"Nothing is waiting for you." in response.content
    assert b"Top decline codes" in response.content
    assert b"Queues and workers" in response.content  # viewers may view jobs


def test_staff_without_payment_access_sees_no_payment_cards(client):
    nobody = UserFactory(username="no-role")
    names = [card.name for card, _, _ in home(client, nobody).context["cards"]]
    assert names == ["backoffice.needs_person"]


def test_figures_count_per_day_and_currency_and_refresh_is_idempotent(make_payment, finance):
    captured = make_payment(amount_minor=1000)
    process_payment(captured.pk)
    declined = make_payment(amount_minor=500, payment_method="tok_decline")
    process_payment(declined.pk)
    make_payment(amount_minor=700, currency="JPY")  # still pending

    payment_figures_refresh(days=2)
    rows_once = sorted(Figure.objects.values_list("series", "bucket", "key", "value"))
    payment_figures_refresh(days=2)

    assert sorted(Figure.objects.values_list("series", "bucket", "key", "value")) == rows_once
    today = figures_read(PAYMENT_SERIES, since=day_start())
    bucket = day_start()
    assert today["payments_created"][bucket] == {"EUR": 2, "JPY": 1}
    assert today["payments_captured"][bucket] == {"EUR": 1, "JPY": 0}
    assert today["payments_failed"][bucket]["EUR"] == 1
    assert today["payments_captured_minor"][bucket]["EUR"] == 1000
    assert today["payments_declined"][bucket] == {"card_declined": 1}


def test_figures_refresh_replaces_a_day_that_changed(make_payment):
    payment = make_payment(amount_minor=1000)
    payment_figures_refresh(days=1)
    process_payment(payment.pk)

    payment_figures_refresh(days=1)

    assert figures_read(["payments_captured"], since=day_start())["payments_captured"][day_start()] == {"EUR": 1}


def test_figures_older_than_the_window_are_left_alone(make_payment):
    old = day_start() - timedelta(days=5)
    Figure.objects.create(series="payments_created", bucket=old, key="EUR", value=42)

    payment_figures_refresh(days=2)

    assert Figure.objects.get(series="payments_created", bucket=old).value == 42


def test_dashboard_queries_do_not_grow_with_the_number_of_payments(client, operator, make_payment):
    def queries_on_home() -> int:
        payment_figures_refresh(days=2)
        with CaptureQueriesContext(connection) as queries:
            home(client, operator)
        return len(queries)

    for _ in range(3):
        process_payment(make_payment().pk)
    queries_on_home()  # warms the per-process caches (content types)
    few = queries_on_home()
    for _ in range(30):
        process_payment(make_payment(payment_method="tok_decline").pk)
    many = queries_on_home()

    assert many == few


def test_home_reads_payments_only_through_capped_or_indexed_queries(client, operator, make_payment):
    make_payment()
    with CaptureQueriesContext(connection) as queries:
        home(client, operator)
    payment_reads = [q["sql"] for q in queries.captured_queries if 'FROM "payments_payment"' in q["sql"]]
    assert payment_reads, "the attention items read payments"
    assert all("LIMIT 1001" in sql for sql in payment_reads), payment_reads


def test_job_figures_count_finished_jobs_per_hour(make_payment):
    payment = make_payment()
    process_payment(payment.pk)
    Job.objects.update(status=JobStatus.SUCCEEDED, finished_at=timezone.now())

    job_figures_refresh(hours=1)

    assert Figure.objects.get(series="jobs_succeeded", key="payments").value == 1


@pytest.mark.parametrize("name", ["payments-outcomes", "payments-success", "payments-declines", "jobs"])
def test_charts_are_svg_without_script(client, operator, make_payment, name):
    process_payment(make_payment().pk)
    payment_figures_refresh(days=1)
    job_figures_refresh(hours=1)

    response = logged_in(client, operator).get(f"/admin/dashboard/charts/{name}.svg")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/svg+xml"
    assert response.content.lstrip().startswith(b"<?xml")
    assert b"<script" not in response.content
    assert b"http" not in response.content.replace(b"http://www.w3.org", b"").replace(b"http://pygal.org", b"").replace(
        b"http://github.com/Kozea/pygal", b""
    )


def test_volume_chart_needs_a_currency_and_charts_need_staff(client, operator):
    logged_in(client, operator)
    assert client.get("/admin/dashboard/charts/payments-volume.svg?currency=EUR").status_code == 200
    assert client.get("/admin/dashboard/charts/payments-volume.svg?currency=eur;").status_code == 404
    assert client.get("/admin/dashboard/charts/nothing.svg").status_code == 404
    client.logout()
    assert client.get("/admin/dashboard/charts/jobs.svg").status_code == 302


def test_chart_of_a_model_the_user_cannot_view_is_not_found(client):
    nobody = UserFactory(username="no-role")
    assert logged_in(client, nobody).get("/admin/dashboard/charts/payments-outcomes.svg").status_code == 404


def test_an_app_adds_a_card_with_one_call(client, operator, settings, tmp_path):
    (tmp_path / "ledger_card.html").write_text("<h2>Ledger</h2><p>balance {{ balance }}</p>")
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [*settings.TEMPLATES[0]["DIRS"], tmp_path]}]
    register_card(name="test.ledger", template="ledger_card.html", context=lambda request: {"balance": 42}, order=99)
    try:
        assert b"balance 42" in home(client, operator).content
    finally:
        from backoffice import dashboard

        dashboard._cards.pop("test.ledger")


def test_unknown_payments_link_to_their_filtered_list(client, operator, make_payment):
    payment = make_payment(payment_method="tok_timeout")
    process_payment(payment.pk)
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.UNKNOWN

    item = attention(home(client, operator))["Unknown payments (lookups still scheduled)"]

    assert item.count == 1
    assert [p.pk for p in client.get(item.url).context["cl"].result_list] == [payment.pk]
