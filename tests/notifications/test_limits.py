"""Limits: endpoints per merchant, and test webhooks per endpoint in any hour."""

from datetime import timedelta

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.utils import timezone

from notifications.endpoints import webhook_endpoint_create, webhook_test_send
from notifications.models import Notification, WebhookEndpoint

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def public_dns(dns):
    for n in range(12):
        dns.answer(f"hooks{n}.merchant.example", "93.184.215.14")


def test_a_merchant_has_at_most_the_configured_number_of_endpoints(merchant, settings):
    settings.WEBHOOKS_MAX_ENDPOINTS_PER_MERCHANT = 3
    for n in range(3):
        webhook_endpoint_create(merchant=merchant, url=f"https://hooks{n}.merchant.example/")

    with pytest.raises(ValidationError) as refused:
        webhook_endpoint_create(merchant=merchant, url="https://hooks9.merchant.example/")

    assert refused.value.code == "too_many_endpoints"
    assert WebhookEndpoint.objects.filter(merchant=merchant).count() == 3


def test_the_default_limit_of_endpoints_is_ten(merchant):
    for n in range(10):
        webhook_endpoint_create(merchant=merchant, url=f"https://hooks{n}.merchant.example/")
    with pytest.raises(ValidationError):
        webhook_endpoint_create(merchant=merchant, url="https://hooks11.merchant.example/")


def test_test_sends_are_limited_per_endpoint_per_hour(merchant, operator, settings):
    settings.WEBHOOKS_TEST_SENDS_PER_HOUR = 2
    endpoint = webhook_endpoint_create(merchant=merchant, url="https://hooks0.merchant.example/")
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        webhook_test_send(endpoint=endpoint, actor=operator)
        webhook_test_send(endpoint=endpoint, actor=operator)
        with pytest.raises(ValidationError) as refused:
            webhook_test_send(endpoint=endpoint, actor=operator)
        assert refused.value.code == "too_many_test_sends"
        assert Notification.objects.filter(endpoint=endpoint).count() == 2

        clock.move_to(start + timedelta(minutes=61))
        webhook_test_send(endpoint=endpoint, actor=operator)
        assert Notification.objects.filter(endpoint=endpoint).count() == 3
