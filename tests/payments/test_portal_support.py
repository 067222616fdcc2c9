"""Fixtures of the merchant portal tests, imported by the test_portal_* modules (no tests here)."""

import pytest
from django.test import Client
from django.urls import reverse

from payments.jobs import process_payment
from payments.models import Membership
from payments.states import PaymentStatus
from tests.factories import MerchantFactory, UserFactory

PASSWORD = "correct horse battery staple"


def merchant_user(username: str, merchant, role=Membership.Role.OWNER, **user_fields):
    user = UserFactory(username=username, **{"is_staff": False, **user_fields})
    Membership.objects.create(user=user, merchant=merchant, role=role)
    return user


@pytest.fixture
def other_merchant(db):
    return MerchantFactory(name="Other Shop", slug="other-shop")


@pytest.fixture
def owner(merchant):
    return merchant_user("olga-owner", merchant, Membership.Role.OWNER)


@pytest.fixture
def member(merchant):
    return merchant_user("mike-member", merchant, Membership.Role.MEMBER)


@pytest.fixture
def owner_client(owner):
    client = Client()
    client.force_login(owner)
    return client


@pytest.fixture
def member_client(member):
    client = Client()
    client.force_login(member)
    return client


@pytest.fixture
def captured(make_payment):
    """A payment that went through the gateway and succeeded (100.00 EUR unless told)."""

    def make(**overrides):
        payment = make_payment(**{"amount_minor": 100_00, **overrides})
        process_payment(payment.pk)
        payment.refresh_from_db()
        assert payment.status == PaymentStatus.SUCCEEDED
        return payment

    return make


@pytest.fixture
def other_payment(other_merchant, make_payment, captured):
    """A succeeded payment of the other merchant."""
    return captured(merchant=other_merchant, merchant_reference="theirs-1", customer_email="secret@their.example")


def url(name: str, *args) -> str:
    return reverse(f"merchant:{name}", args=args)
