import csv
import io
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from payments.figures import payment_figures_refresh
from payments.jobs import process_payment
from payments.models import Payment, PaymentEvent
from payments.money import COMMON_CURRENCIES
from payments.portal.reports import AttentionItem
from payments.portal.sections import dashboard_attention, payment_page_sections
from payments.services import payment_create
from payments.states import PaymentStatus
from tests.factories import PaymentFactory
from tests.helpers import url

pytestmark = pytest.mark.django_db


def new_payment_data(**overrides):
    data = {
        "amount": "12.34",
        "currency": "EUR",
        "payment_method": "tok_success",
        "customer_email": "ann@customer.example",
        "merchant_reference": "order-77",
        "description": "Two mugs",
        "idempotency_key": "portal_test_key_1",
    }
    data.update(overrides)
    return data


def new_payment_kwargs(merchant, **overrides):
    kwargs = {
        "merchant": merchant,
        "amount_minor": 1234,
        "currency": "EUR",
        "payment_method": "tok_success",
        "idempotency_key": "portal_test_key_1",
    }
    return {**kwargs, **overrides}


# --- new payment --------------------------------------------------------------------------------


def test_new_payment_form_carries_a_fresh_idempotency_key(owner_client):
    first = owner_client.get(url("payment_new"))
    second = owner_client.get(url("payment_new"))
    key = first.context["form"]["idempotency_key"].value()
    assert key.startswith("portal_") and key != second.context["form"]["idempotency_key"].value()
    assert f'type="hidden" name="idempotency_key" value="{key}"' in first.content.decode()


@pytest.mark.parametrize(
    "amount,currency,minor",
    [
        ("12.34", "EUR", 1234),
        ("1200", "JPY", 1200),
        ("1.234", "KWD", 1234),
        ("1,000.50", "USD", 100050),
        (" 7 ", "EUR", 700),
    ],
)
def test_new_payment_parses_major_units_exactly_per_currency(member_client, merchant, member, amount, currency, minor):
    response = member_client.post(url("payment_new"), new_payment_data(amount=amount, currency=currency))
    payment = Payment.objects.get(merchant=merchant)
    assert response.status_code == 302 and response["Location"] == url("payment", payment.public_id)
    assert (payment.amount_minor, payment.currency, payment.status) == (minor, currency, PaymentStatus.PENDING)
    assert payment.created_by == member and payment.merchant_reference == "order-77"
    assert payment.customer_email == "ann@customer.example" and payment.payment_method == "tok_success"


def test_double_submit_creates_one_payment(owner_client, merchant):
    first = owner_client.post(url("payment_new"), new_payment_data())
    second = owner_client.post(url("payment_new"), new_payment_data())
    assert Payment.objects.filter(merchant=merchant).count() == 1
    assert first["Location"] == second["Location"]


def test_resubmit_with_changed_details_is_refused_and_gets_a_fresh_key(owner_client, merchant):
    owner_client.post(url("payment_new"), new_payment_data())
    response = owner_client.post(url("payment_new"), new_payment_data(amount="99.00"))
    assert response.status_code == 200
    assert "already used to create a payment" in response.content.decode()
    form = response.context["form"]
    assert form["amount"].value() == "99.00"
    assert form["idempotency_key"].value() != "portal_test_key_1"
    assert Payment.objects.filter(merchant=merchant).count() == 1
    again = owner_client.post(
        url("payment_new"), new_payment_data(amount="99.00", idempotency_key=form["idempotency_key"].value())
    )
    assert again.status_code == 302 and Payment.objects.filter(merchant=merchant).count() == 2


def test_same_key_in_another_merchant_does_not_reach_its_payment(owner_client, other_merchant, merchant, make_payment):
    theirs = make_payment(merchant=other_merchant, idempotency_key="portal_shared_key", amount_minor=500)
    response = owner_client.post(url("payment_new"), new_payment_data(idempotency_key="portal_shared_key"))
    ours = Payment.objects.get(merchant=merchant)
    assert response["Location"] == url("payment", ours.public_id) and ours.pk != theirs.pk


BAD_INPUT = [
    ({"amount": "12abc"}, "amount", "Enter an amount such as 12.34."),
    ({"amount": "twelve"}, "amount", "Enter an amount such as 12.34."),
    ({"amount": "1e3"}, "amount", "Enter an amount such as 12.34."),
    ({"amount": "NaN"}, "amount", "Enter an amount such as 12.34."),
    ({"amount": "12.345"}, "amount", "EUR has 2 decimal places; 12.345 has more."),
    ({"amount": "12.5", "currency": "JPY"}, "amount", "JPY has 0 decimal places"),
    ({"amount": "0"}, "amount", "The amount must be greater than zero."),
    ({"amount": "0.00"}, "amount", "The amount must be greater than zero."),
    ({"amount": "-5"}, "amount", "The amount must be greater than zero."),
    ({"amount": "1000001"}, "amount", "above the maximum of 1,000,000.00 EUR"),
    ({"amount": ""}, "amount", "This field is required."),
    ({"currency": "XYZ"}, "currency", "Select a valid choice."),
    ({"currency": "eur"}, "currency", "Select a valid choice."),
    ({"payment_method": "tok_unknown"}, "payment_method", "Select a valid choice."),
    ({"customer_email": "not-an-email"}, "customer_email", "Enter a valid email address."),
    ({"merchant_reference": "r" * 101}, "merchant_reference", "at most 100 characters"),
    ({"description": "d" * 256}, "description", "at most 255 characters"),
]


@pytest.mark.parametrize("overrides,field,message", BAD_INPUT)
def test_bad_input_shows_the_error_next_to_the_field_keeps_the_input_and_writes_nothing(
    owner_client, overrides, field, message
):
    response = owner_client.post(url("payment_new"), new_payment_data(**overrides))
    assert response.status_code == 200
    form = response.context["form"]
    assert message in " ".join(form.errors[field])
    html = response.content.decode()
    # The error is rendered inside the field's own group, next to its input.
    group = html.split(f'for="id_{field}"')[1].split('class="field')[0]
    assert message.split(";")[0].split("(")[0][:20].replace("'", "&#x27;") in group
    for name, value in overrides.items():
        assert form[name].value() == value
    assert not Payment.objects.exists() and not PaymentEvent.objects.exists()


CARD = "4242424242424242"


@pytest.mark.parametrize(
    "field,typed",
    [
        ("payment_method", CARD),
        ("idempotency_key", CARD),
        ("merchant_reference", "4242 4242 4242 4242"),
        ("description", f"card {CARD} exp 12/30"),
        ("customer_email", f"{CARD}@customer.example"),
    ],
)
def test_a_card_number_in_any_field_is_refused_and_never_shown_back(owner_client, field, typed):
    response = owner_client.post(url("payment_new"), new_payment_data(**{field: typed}))

    assert response.status_code == 200
    assert response.context["form"].errors[field] == [
        "This looks like a card number; card numbers are never accepted or stored."
    ]
    page = response.content.decode()
    assert "4242" not in page and "Select a valid choice" not in page
    assert "card numbers are never accepted or stored" in page
    assert not Payment.objects.exists() and not PaymentEvent.objects.exists()


def test_the_service_refuses_a_card_number_as_the_key_whatever_the_form(owner, merchant):
    with pytest.raises(ValidationError) as refused:
        payment_create(**new_payment_kwargs(merchant, idempotency_key=CARD), actor=owner)

    assert list(refused.value.error_dict) == ["idempotency_key"]
    assert not Payment.objects.exists()


def test_bad_amount_text_is_echoed_escaped(owner_client):
    response = owner_client.post(url("payment_new"), new_payment_data(amount='"><script>x</script>'))
    assert response.status_code == 200
    assert b"<script>x</script>" not in response.content and b"&lt;script&gt;" in response.content


def test_a_forged_merchant_field_is_ignored(owner_client, merchant, other_merchant):
    owner_client.post(url("payment_new"), new_payment_data(merchant=other_merchant.pk))
    assert Payment.objects.get().merchant == merchant


def test_new_payment_of_an_inactive_merchant_is_refused(owner_client, merchant):
    merchant.is_active = False
    merchant.save()
    assert owner_client.post(url("payment_new"), new_payment_data()).status_code == 403
    assert not Payment.objects.exists()


# --- list, filters, CSV ---------------------------------------------------------------------------


@pytest.fixture
def listed(merchant, other_merchant):
    """Payments of several statuses, currencies and days for the current merchant, and one of another."""
    now = timezone.now()
    rows = [
        ("order-1", "a@x.example", PaymentStatus.SUCCEEDED, "EUR", 0),
        ("order-2", "b@x.example", PaymentStatus.FAILED, "EUR", 1),
        ("ship-3", "c@y.example", PaymentStatus.SUCCEEDED, "JPY", 3),
        ("order-4", "d@y.example", PaymentStatus.PENDING, "USD", 10),
    ]
    payments = {}
    for reference, email, status, currency, days_ago in rows:
        payment = PaymentFactory(
            merchant=merchant, merchant_reference=reference, customer_email=email, status=status, currency=currency
        )
        Payment.objects.filter(pk=payment.pk).update(created_at=now - timedelta(days=days_ago))
        payments[reference] = payment
    PaymentFactory(
        merchant=other_merchant,
        merchant_reference="order-9",
        customer_email="a@x.example",
        status=PaymentStatus.SUCCEEDED,
    )
    return payments


def listed_references(response):
    return [payment.merchant_reference for payment in response.context["page"].object_list]


@pytest.mark.parametrize(
    "query,expected",
    [
        ("", ["order-1", "order-2", "ship-3", "order-4"]),
        ("?status=succeeded", ["order-1", "ship-3"]),
        ("?currency=JPY", ["ship-3"]),
        ("?q=ORDER", ["order-1", "order-2", "order-4"]),
        ("?q=y.example", ["ship-3", "order-4"]),
        ("?status=succeeded&currency=EUR", ["order-1"]),
    ],
)
def test_payment_list_filters_and_searches_only_the_current_merchant(owner_client, listed, query, expected):
    response = owner_client.get(url("payments") + query)
    assert response.status_code == 200 and listed_references(response) == expected
    assert b"order-9" not in response.content


def test_payment_list_filters_by_date_range(owner_client, listed):
    today = timezone.localdate()
    query = f"?date_from={(today - timedelta(days=4)).isoformat()}&date_to={(today - timedelta(days=1)).isoformat()}"
    assert listed_references(owner_client.get(url("payments") + query)) == ["order-2", "ship-3"]


def test_payment_list_shows_errors_of_bad_filters_and_applies_the_good_ones(owner_client, listed):
    response = owner_client.get(url("payments") + "?status=bogus&currency=EUR&date_from=yesterday")
    form = response.context["filters"]
    assert "status" in form.errors and "date_from" in form.errors
    assert listed_references(response) == ["order-1", "order-2"]
    response = owner_client.get(url("payments") + "?date_from=2026-02-10&date_to=2026-02-01")
    assert "The end date is before the start date." in response.content.decode()


def test_payment_list_currency_filter_offers_a_fixed_list_and_filters_by_any_code(owner_client, merchant, listed):
    # A fixed list: no SELECT DISTINCT over the merchant's payments on every page view.
    choices = [code for code, _ in owner_client.get(url("payments")).context["filters"].fields["currency"].choices]
    assert choices == ["", *COMMON_CURRENCIES]
    PaymentFactory(merchant=merchant, currency="NOK", merchant_reference="krone-1")
    response = owner_client.get(url("payments") + "?currency=NOK")
    assert listed_references(response) == ["krone-1"]
    assert "NOK" in [code for code, _ in response.context["filters"].fields["currency"].choices]


def test_payment_list_is_paginated_and_keeps_filters_in_page_links(owner_client, merchant):
    for number in range(30):
        PaymentFactory(merchant=merchant, status=PaymentStatus.FAILED, merchant_reference=f"bulk-{number}")
    response = owner_client.get(url("payments") + "?status=failed")
    assert len(response.context["page"].object_list) == 25 and response.context["page"].paginator.count == 30
    assert "?status=failed&amp;page=2" in response.content.decode()
    second = owner_client.get(url("payments") + "?status=failed&page=2")
    assert len(second.context["page"].object_list) == 5
    assert owner_client.get(url("payments") + "?page=999").status_code == 200


def test_csv_download_holds_the_filtered_list_of_the_current_merchant(owner_client, listed):
    response = owner_client.get(url("export", "payments", "csv") + "?currency=EUR")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    header, *rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    rows = [dict(zip(header, row, strict=True)) for row in rows]
    assert sorted(row["merchant reference"] for row in rows) == ["order-1", "order-2"]
    assert {(row["amount"], row["currency"]) for row in rows} == {("12.50", "EUR")}


def test_csv_neutralises_formulas_from_customer_input(owner_client, merchant):
    PaymentFactory(merchant=merchant, merchant_reference='=HYPERLINK("http://evil")', customer_email="")
    response = owner_client.get(url("export", "payments", "csv"))
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[1][rows[0].index("merchant reference")].startswith("'=")


# --- detail and status --------------------------------------------------------------------------


def test_payment_detail_shows_amount_status_timeline_and_attempts(member_client, merchant, make_payment):
    payment = make_payment(amount_minor=1234, payment_method="tok_decline", merchant_reference="order-5")
    process_payment(payment.pk)
    response = member_client.get(url("payment", payment.public_id))
    html = response.content.decode()
    assert response.status_code == 200
    assert "12.34 EUR" in html and "Failed" in html and "order-5" in html
    assert [entry.to_status for entry in response.context["timeline"]] == ["Pending", "Processing", "Failed"]
    attempt = response.context["attempts"][0]
    assert attempt.outcome == "Declined" and attempt.code and attempt.code in html
    assert "data-poll-payment" not in html  # failed does not move on its own
    assert "Refund</a>" not in html


def test_attempts_hide_gateway_internals(owner_client, make_payment):
    payment = make_payment(payment_method="tok_error")
    process_payment(payment.pk)
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.UNKNOWN
    html = owner_client.get(url("payment", payment.public_id)).content.decode()
    assert "502" not in html and "gateway_error" not in html and f"{payment.public_id}_a1" not in html
    assert "awaiting_confirmation" in html and "data-poll-payment" in html


def test_timeline_names_the_merchants_own_people_but_not_paydesk_staff(owner_client, owner, operator, make_payment):
    from payments import services

    payment = make_payment(actor=owner)
    services.payment_cancel(payment=payment, actor=operator, reason="internal: suspected fraud ring 42")
    response = owner_client.get(url("payment", payment.public_id))
    actors = [entry.actor for entry in response.context["timeline"]]
    assert actors == ["olga-owner", "Paydesk"]
    html = response.content.decode()
    assert "olivia-operator" not in html and "fraud ring" not in html


def test_moving_payment_page_polls_its_status(owner_client, make_payment):
    payment = make_payment()
    html = owner_client.get(url("payment", payment.public_id)).content.decode()
    assert f'data-poll-payment="{payment.public_id}"' in html and "data-reload-on-change" in html
    assert "payments/portal.js" in html


def test_status_endpoint_answers_only_for_the_current_merchant(owner_client, make_payment, other_payment):
    payment = make_payment()
    response = owner_client.get(
        url("payment_statuses") + f"?id={payment.public_id}&id={other_payment.public_id}&id=pay_nonexistent"
    )
    answer = response.json()["payments"]
    assert list(answer) == [payment.public_id]
    assert answer[payment.public_id]["status"] == "pending" and answer[payment.public_id]["moving"] is True
    process_payment(payment.pk)
    after = owner_client.get(url("payment_statuses") + f"?id={payment.public_id}").json()["payments"]
    assert after[payment.public_id]["status"] == "succeeded" and after[payment.public_id]["moving"] is False
    assert after[payment.public_id]["token"] != answer[payment.public_id]["token"]


def test_detail_page_includes_sections_other_apps_contribute(owner_client, make_payment):
    from django.utils.html import format_html

    payment = make_payment()

    def section(sender, payment, merchant, **kwargs):
        return format_html("<section id='extra'>Notifications of {}</section>", payment.public_id)

    def unsafe(sender, **kwargs):
        return "<script>not trusted</script>"

    payment_page_sections.connect(section, dispatch_uid="test-section")
    payment_page_sections.connect(unsafe, dispatch_uid="test-unsafe")
    try:
        html = owner_client.get(url("payment", payment.public_id)).content.decode()
    finally:
        payment_page_sections.disconnect(dispatch_uid="test-section")
        payment_page_sections.disconnect(dispatch_uid="test-unsafe")
    assert f"Notifications of {payment.public_id}" in html and "not trusted" not in html


# --- dashboard ------------------------------------------------------------------------------------


def test_dashboard_shows_volume_per_currency_success_rate_and_latest_payments(owner_client, listed):
    # Days before today come from the merchant's figures, which the sweeper process refreshes.
    payment_figures_refresh(days=32)
    response = owner_client.get(url("dashboard"))
    today, month = response.context["periods"]
    assert today.volumes == ["12.50 EUR"] and today.success_rate == "100.0%"
    html = response.content.decode()
    assert "12.50 EUR" in html and "order-1" in html and "order-9" not in html
    if (timezone.localdate() - timedelta(days=3)).month == timezone.localdate().month:
        assert month.volumes == ["12.50 EUR", "1,250 JPY"]
        assert (month.captured, month.failed) == (2, 1) and month.success_rate == "66.7%"


def test_dashboard_lists_what_needs_attention(owner_client, merchant, captured):
    PaymentFactory(merchant=merchant, status=PaymentStatus.FAILED)
    PaymentFactory(merchant=merchant, status=PaymentStatus.UNKNOWN)

    def webhooks(sender, merchant, **kwargs):
        return [AttentionItem("Failing webhook endpoints", 2, "/merchant/webhooks/"), AttentionItem("Nothing", 0)]

    dashboard_attention.connect(webhooks, dispatch_uid="test-attention")
    try:
        response = owner_client.get(url("dashboard"))
    finally:
        dashboard_attention.disconnect(dispatch_uid="test-attention")
    labels = {item.label: item.count for item in response.context["attention"]}
    assert labels == {
        "Failed payments in the last 7 days": 1,
        "Payments awaiting the bank's answer (unknown)": 1,
        "Failing webhook endpoints": 2,
    }


def test_dashboard_with_nothing_to_report(owner_client):
    response = owner_client.get(url("dashboard"))
    assert b"Nothing needs your attention." in response.content and b"No payments" in response.content
