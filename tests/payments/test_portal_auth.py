import re

import pytest
from django.core import mail
from django.test import Client

from payments.models import Membership
from tests.factories import MerchantFactory, UserFactory
from tests.helpers import PASSWORD, merchant_user, run_password_reset_jobs, url

pytestmark = pytest.mark.django_db


def log_in(client, username, password=PASSWORD, **extra):
    return client.post(url("login"), {"username": username, "password": password}, **extra)


def test_owner_logs_in_and_lands_on_the_dashboard(owner):
    client = Client()
    response = log_in(client, "olga-owner")
    assert response.status_code == 302 and response["Location"] == url("dashboard")
    page = client.get(url("dashboard"))
    assert page.status_code == 200 and b"Needs attention" in page.content


def test_login_follows_a_local_next_but_not_another_site(owner):
    response = Client().post(
        url("login") + "?next=/merchant/payments/",
        {"username": "olga-owner", "password": PASSWORD, "next": "/merchant/payments/"},
    )
    assert response["Location"] == "/merchant/payments/"
    response = Client().post(
        url("login"), {"username": "olga-owner", "password": PASSWORD, "next": "https://evil.example/"}
    )
    assert response["Location"] == url("dashboard")


def test_pages_send_anonymous_visitors_to_the_login(db):
    response = Client().get(url("payments"))
    assert response.status_code == 302 and response["Location"].startswith(url("login") + "?next=")


def test_wrong_password_shows_an_error_and_keeps_the_username(owner):
    response = log_in(Client(), "olga-owner", "wrong")
    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content
    assert b'value="olga-owner"' in response.content


def test_inactive_user_cannot_log_in(merchant):
    merchant_user("ivan-inactive", merchant, is_active=False)
    response = log_in(Client(), "ivan-inactive")
    assert response.status_code == 200 and "_auth_user_id" not in response.client.session


def test_user_of_an_inactive_merchant_cannot_log_in(db):
    closed = MerchantFactory(is_active=False)
    merchant_user("cora-closed", closed)
    response = log_in(Client(), "cora-closed")
    assert response.status_code == 200 and b"for a merchant account" in response.content
    assert "_auth_user_id" not in response.client.session


def test_merchant_deactivated_after_login_loses_access(owner_client, merchant):
    merchant.is_active = False
    merchant.save()
    response = owner_client.get(url("payments"))
    assert response.status_code == 403 and b"no merchant access" in response.content


def test_user_deactivated_after_login_is_logged_out(owner_client, owner):
    owner.is_active = False
    owner.save()
    response = owner_client.get(url("payments"))
    assert response.status_code == 302 and response["Location"].startswith(url("login"))


def test_staff_account_is_not_a_merchant_account(db):
    UserFactory(username="sam-staff", is_staff=True, is_superuser=True)
    response = log_in(Client(), "sam-staff")
    assert response.status_code == 200 and "_auth_user_id" not in response.client.session
    # Logged in through the admin, the same account still sees no merchant data.
    client = Client()
    client.post("/admin/login/", {"username": "sam-staff", "password": PASSWORD})
    assert "_auth_user_id" in client.session
    response = client.get(url("dashboard"))
    assert response.status_code == 403 and b"no merchant access" in response.content


def test_staff_account_with_a_membership_is_a_merchant_account(merchant):
    merchant_user("sue-staff-owner", merchant, is_staff=True)
    assert log_in(Client(), "sue-staff-owner").status_code == 302


def test_logout_needs_a_post(owner_client):
    assert owner_client.get(url("logout")).status_code == 405
    response = owner_client.post(url("logout"))
    assert response.status_code == 302 and response["Location"] == url("login")
    assert owner_client.get(url("dashboard")).status_code == 302


def test_password_reset_mails_a_link_that_sets_a_new_password(owner):
    client = Client()
    response = client.post(url("password_reset"), {"email": owner.email})
    assert response.status_code == 302 and response["Location"] == url("password_reset_done")
    run_password_reset_jobs()
    assert len(mail.outbox) == 1 and mail.outbox[0].to == [owner.email]
    link = re.search(r"http://testserver(/merchant/reset/\S+/)", mail.outbox[0].body).group(1)
    form_page = client.get(link, follow=True)
    assert form_page.status_code == 200 and b"Choose a new password" in form_page.content
    response = client.post(
        form_page.redirect_chain[-1][0],
        {
            "new_password1": "a much newer passphrase 42",
            "new_password2": "a much newer passphrase 42",
        },
    )
    assert response.status_code == 302 and response["Location"] == url("password_reset_complete")
    assert log_in(Client(), "olga-owner", "a much newer passphrase 42").status_code == 302


def test_password_reset_says_the_same_for_unknown_and_staff_addresses_and_mails_neither(db):
    UserFactory(username="sam-staff", email="sam@paydesk.example", is_staff=True)
    for email in ("nobody@nowhere.example", "sam@paydesk.example"):
        response = Client().post(url("password_reset"), {"email": email})
        assert response.status_code == 302 and response["Location"] == url("password_reset_done")
    run_password_reset_jobs()
    assert mail.outbox == []


def test_password_reset_refuses_a_bad_email(db):
    response = Client().post(url("password_reset"), {"email": "not an e-mail"})
    assert response.status_code == 200 and b"Enter a valid email address." in response.content


def test_switcher_changes_the_current_merchant(owner, owner_client, merchant):
    second = MerchantFactory(name="Second Shop")
    Membership.objects.create(user=owner, merchant=second, role=Membership.Role.MEMBER)
    page = owner_client.get(url("dashboard"))
    assert b"merchant-switch" in page.content and b"Second Shop" in page.content
    response = owner_client.post(url("switch"), {"merchant": second.pk})
    assert response.status_code == 302
    page = owner_client.get(url("dashboard"))
    assert page.context["request"].merchant == second
    assert page.context["request"].membership.role == Membership.Role.MEMBER


def test_switcher_refuses_a_merchant_that_is_not_yours(owner_client, other_merchant):
    assert owner_client.post(url("switch"), {"merchant": other_merchant.pk}).status_code == 404
    assert owner_client.post(url("switch"), {"merchant": "x"}).status_code == 404
    assert owner_client.get(url("switch")).status_code == 405


def test_single_membership_shows_no_switcher(owner_client):
    assert b"merchant-switch" not in owner_client.get(url("dashboard")).content


def test_memberships_are_managed_in_the_admin(admin_client, owner):
    response = admin_client.get("/admin/payments/membership/")
    assert response.status_code == 200 and b"olga-owner" in response.content
    assert admin_client.get("/admin/payments/membership/add/").status_code == 200
