"""Card numbers are never stored (every text field of every model refuses one) and never reach
a log in clear: the request log line of a GET search, app logs."""

import io
import logging

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.signals import pre_save

from backoffice.card_numbers import (
    CardNumberRefused,
    checked_text_fields,
    contains_card_number,
    is_paydesk_model,
    mask_card_numbers,
)
from backoffice.db import insert_rows
from backoffice.models import AuditEntry
from payments.services import payment_cancel

CARD = "4242424242424242"


@pytest.mark.parametrize(
    "text",
    [
        f"GET /admin/payments/payment/?q={CARD} HTTP/1.1",
        "GET /merchant/payments/?q=4242+4242+4242+4242 HTTP/1.1",
        "GET /merchant/payments/?q=4242%204242%204242%204242&status=failed HTTP/1.1",
        "GET /admin/payments/payment/?q=4242-4242-4242-4242 HTTP/1.1",
        "refund for 5555 5555 5555 4444 asked",
    ],
)
def test_card_numbers_in_any_spelling_are_masked(text):
    masked = mask_card_numbers(text)
    assert masked != text and "[card number removed]" in masked
    assert "4242" not in masked.replace("4242 4242", "") or "4444" not in masked


def test_other_numbers_are_left_alone():
    text = "GET /merchant/payments/?q=1234567890123&page=2 HTTP/1.1 order 2026120100001"
    assert mask_card_numbers(text) == text
    assert not contains_card_number("order 1234567890123") and contains_card_number(f"card {CARD}")


def captured(logger_name: str, message: str, *args) -> str:
    logger = logging.getLogger(logger_name)
    # The handlers LOGGING configured (pytest adds its own to the root; those are not ours).
    handlers = [h for h in logger.handlers or logging.getLogger().handlers if type(h) is logging.StreamHandler]
    assert handlers
    stream = io.StringIO()
    previous = [handler.setStream(stream) for handler in handlers]
    try:
        logger.warning(message, *args)
    finally:
        for handler, old in zip(handlers, previous, strict=True):
            handler.setStream(old)
    return stream.getvalue()


def test_the_request_log_line_of_a_get_search_holds_no_card_number():
    line = captured("django.server", '"%s" %s %s', f"GET /admin/payments/payment/?q={CARD} HTTP/1.1", 200, 1234)

    assert "/admin/payments/payment/?q=" in line and CARD not in line


def test_app_logs_hold_no_card_number():
    line = captured("payments.portal", "search for %s gave nothing", "4242 4242 4242 4242")

    assert "search for" in line and "4242 4242 4242 4242" not in line


# --- the one check on every stored text ------------------------------------------------------


def paydesk_models():
    return [model for model in apps.get_models() if is_paydesk_model(model)]


def sent_pre_save(instance):
    pre_save.send(sender=type(instance), instance=instance, raw=False, using="default", update_fields=None)


def spelled(field, text):
    return [text] if isinstance(field, models.JSONField) else text


def test_every_text_field_of_every_paydesk_model_refuses_a_card_number():
    walked = set()
    for model in paydesk_models():
        masked = set(getattr(model, "card_numbers_masked", ()))
        for field in checked_text_fields(model):
            if field.name in masked:
                continue
            instance = model()
            instance.__dict__[field.attname] = spelled(field, "4242 4242 4242 4242")  # protected fields too
            with pytest.raises(CardNumberRefused) as refused:
                sent_pre_save(instance)
            assert list(refused.value.error_dict) == [field.name]
            assert "4242" not in str(refused.value)
            walked.add(f"{model._meta.label}.{field.name}")
    # The walk is not vacuous: the texts the review found stored are among the fields refused.
    assert {
        "payments.Payment.idempotency_key",
        "payments.Payment.merchant_reference",
        "payments.PaymentEvent.reason",
        "payments.Refund.reason",
        "payments.Refund.decision_note",
        "payments.SettlementRequest.reason",
        "payments.SettlementRequest.gateway_reference",
        "payments.SettlementRequest.decision_note",
        "notifications.WebhookEndpoint.url",
        "notifications.WebhookEndpoint.description",
        "backoffice.AuditEntry.reason",
        "backoffice.AuditEntry.details",
        "ledger.Payout.reason",
    } <= walked


def test_texts_kept_for_the_record_are_stored_with_the_card_number_masked():
    for model in paydesk_models():
        for name in getattr(model, "card_numbers_masked", ()):
            field = model._meta.get_field(name)
            instance = model()
            instance.__dict__[field.attname] = spelled(field, f"the receiver said {CARD}")

            sent_pre_save(instance)

            assert getattr(instance, field.attname) == spelled(field, "the receiver said [card number removed]")


def test_a_model_of_a_library_is_not_ours_to_check():
    assert not is_paydesk_model(get_user_model()) and is_paydesk_model(AuditEntry)


@pytest.mark.django_db
def test_a_refused_save_writes_nothing(make_payment, operator):
    payment = make_payment()

    with pytest.raises(ValidationError) as refused:
        payment_cancel(payment=payment, actor=operator, reason=f"customer card {CARD}")

    assert "reason" in refused.value.error_dict
    payment.refresh_from_db()
    assert payment.status == "pending" and not AuditEntry.objects.filter(action="payment_cancel").exists()


@pytest.mark.django_db
def test_the_bulk_insert_refuses_too():
    with pytest.raises(CardNumberRefused):
        insert_rows(AuditEntry, each={"reason": ["fine", f"card {CARD}"]}, same={"action": "bulk"})
    assert not AuditEntry.objects.exists()


@pytest.mark.django_db
def test_an_admin_edit_with_a_card_number_is_refused_on_its_field_and_not_shown_back(admin_client, merchant):
    change_url = f"/admin/payments/merchant/{merchant.pk}/change/"

    response = admin_client.post(
        change_url,
        {"name": f"Shop {CARD}", "slug": merchant.slug, "contact_email": merchant.contact_email, "is_active": "on"},
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["name"] == [
        "This looks like a card number; card numbers are never accepted or stored."
    ]
    assert CARD not in response.content.decode()
    merchant.refresh_from_db()
    assert CARD not in merchant.name


def test_digits_inside_a_uuid_are_not_a_card_number():
    # 8-4-4 digits across a job's UUID pass Luhn; an id is not a card number, in a field or a log.
    job_id = "14242424-2424-4246-a000-00000000000a"
    assert contains_card_number("1424242424244246") and not contains_card_number(f"job {job_id}")
    assert mask_card_numbers(f"job {job_id} failed") == f"job {job_id} failed"
    assert contains_card_number(f"job {job_id} card 4242 4242 4242 4242")
