"""Log-in throttling (django-axes): per account across addresses, per client address behind a
trusted proxy, in the database (so it holds with Redis down), on the portal and the admin."""

import pytest
from django.conf import settings as django_settings
from django.test import Client

from payments.models import Membership
from tests.factories import MerchantFactory, UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"
PORTAL_LOGIN = "/merchant/login/"
ADMIN_LOGIN = "/admin/login/"
PROXY = "10.0.0.1"


@pytest.fixture
def merchant_owner(db):
    user = UserFactory(username="olga-owner", is_staff=False)
    Membership.objects.create(user=user, merchant=MerchantFactory(), role=Membership.Role.OWNER)
    return user


@pytest.fixture
def behind_one_proxy(settings):
    settings.TRUSTED_PROXY_COUNT = 1


def log_in(url, username, password=PASSWORD, client=None, **extra):
    client = client or Client()
    response = client.post(url, {"username": username, "password": password}, **extra)
    return response, client


def logged_in(response, client) -> bool:
    return response.status_code == 302 and "_auth_user_id" in client.session


def test_one_account_is_locked_after_failures_from_many_addresses(merchant_owner):
    for n in range(django_settings.AXES_FAILURE_LIMIT):
        log_in(PORTAL_LOGIN, "olga-owner", "guess", REMOTE_ADDR=f"198.51.100.{n + 1}")

    response, client = log_in(PORTAL_LOGIN, "olga-owner", REMOTE_ADDR="203.0.113.250")

    assert response.status_code == 429 and b"Too many failed log-ins" in response.content
    assert not logged_in(response, client)


def test_a_success_before_the_limit_resets_the_count(merchant_owner):
    for _ in range(django_settings.AXES_FAILURE_LIMIT - 1):
        log_in(PORTAL_LOGIN, "olga-owner", "guess")
    assert logged_in(*log_in(PORTAL_LOGIN, "olga-owner"))
    for _ in range(django_settings.AXES_FAILURE_LIMIT - 1):
        log_in(PORTAL_LOGIN, "olga-owner", "guess")
    assert logged_in(*log_in(PORTAL_LOGIN, "olga-owner"))


def test_behind_a_proxy_one_client_locks_out_only_itself(merchant_owner, behind_one_proxy):
    # Junk log-ins from one client, each with a different made-up address in front of what the
    # proxy appends: all count against the address the proxy saw.
    for n in range(30):
        log_in(PORTAL_LOGIN, f"nobody-{n}", "guess", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=f"1.2.3.{n}, 203.0.113.9")

    attacker, client = log_in(PORTAL_LOGIN, "olga-owner", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert attacker.status_code == 429 and not logged_in(attacker, client)
    assert logged_in(*log_in(PORTAL_LOGIN, "olga-owner", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="198.51.100.7"))


def test_without_a_trusted_proxy_a_forwarded_header_is_ignored(merchant_owner):
    for n in range(django_settings.AXES_FAILURE_LIMIT):
        log_in(PORTAL_LOGIN, f"nobody-{n}", "guess", REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR=f"1.2.3.{n}")

    response, client = log_in(PORTAL_LOGIN, "olga-owner", REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR="5.6.7.8")
    assert response.status_code == 429 and not logged_in(response, client)


def test_a_forwarded_header_from_outside_the_trusted_proxies_is_ignored(merchant_owner, behind_one_proxy, settings):
    settings.TRUSTED_PROXY_IPS = ["10.0.0.0/8"]
    for n in range(django_settings.AXES_FAILURE_LIMIT):
        log_in(PORTAL_LOGIN, f"nobody-{n}", "guess", REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR=f"1.2.3.{n}")

    response, client = log_in(PORTAL_LOGIN, "olga-owner", REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR="5.6.7.8")
    assert response.status_code == 429 and not logged_in(response, client)


def test_the_lockout_holds_with_redis_down(merchant_owner, settings):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    }
    for _ in range(django_settings.AXES_FAILURE_LIMIT):
        log_in(PORTAL_LOGIN, "olga-owner", "guess")

    response, client = log_in(PORTAL_LOGIN, "olga-owner")

    assert response.status_code == 429 and not logged_in(response, client)


def test_the_admin_log_in_is_locked_the_same_way(db):
    UserFactory(username="sam-staff", roles=["Viewers"])
    for n in range(django_settings.AXES_FAILURE_LIMIT):
        log_in(ADMIN_LOGIN, "sam-staff", "wrong", REMOTE_ADDR=f"198.51.100.{n + 1}")

    response, client = log_in(ADMIN_LOGIN, "sam-staff")

    assert response.status_code == 429 and not logged_in(response, client)
