"""Session limits: staff 12 h in all and 30 min idle, merchants their own limits (settings)."""

from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.test import Client
from django.utils import timezone

from payments.models import Membership
from tests.factories import MerchantFactory, UserFactory

pytestmark = pytest.mark.django_db


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def still_in(client, url) -> bool:
    return client.get(url).status_code == 200


@pytest.fixture
def staff(db):
    return UserFactory(username="vera-viewer", roles=["Viewers"])


@pytest.fixture
def merchant_user(db):
    user = UserFactory(username="olga-owner", is_staff=False)
    Membership.objects.create(user=user, merchant=MerchantFactory(), role=Membership.Role.OWNER)
    return user


def test_defaults_are_twelve_hours_and_thirty_minutes_idle_for_staff():
    assert settings.SESSION_STAFF_MAX_SECONDS == 12 * 3600
    assert settings.SESSION_STAFF_IDLE_SECONDS == 30 * 60
    assert settings.SESSION_COOKIE_AGE <= max(settings.SESSION_STAFF_MAX_SECONDS, settings.SESSION_MERCHANT_MAX_SECONDS)


def test_a_staff_session_ends_after_thirty_idle_minutes(staff):
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        client = signed_in(staff)
        clock.move_to(start + timedelta(minutes=29))
        assert still_in(client, "/admin/")
        clock.move_to(start + timedelta(minutes=29 + 31))
        assert client.get("/admin/").status_code == 302
        assert "_auth_user_id" not in client.session


def test_a_busy_staff_session_still_ends_after_twelve_hours(staff):
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        client = signed_in(staff)
        for minutes in range(20, 12 * 60, 20):
            clock.move_to(start + timedelta(minutes=minutes))
            assert still_in(client, "/admin/"), minutes
        clock.move_to(start + timedelta(hours=12, minutes=1))
        assert client.get("/admin/").status_code == 302


def test_a_merchant_session_has_its_own_idle_timeout(merchant_user, settings):
    settings.SESSION_MERCHANT_IDLE_SECONDS = 3600
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        client = signed_in(merchant_user)
        clock.move_to(start + timedelta(minutes=50))
        assert still_in(client, "/merchant/")
        clock.move_to(start + timedelta(minutes=50 + 61))
        response = client.get("/merchant/")
        assert response.status_code == 302 and response["Location"].startswith("/merchant/login/")
