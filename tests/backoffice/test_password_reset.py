"""Password reset: the request only records and enqueues (no timing difference between a
registered address and an unknown one), a job sends the e-mail, and requests are limited per
e-mail address and per client address in the database."""

import pytest
from django.core import mail
from django.test import Client

from backoffice.models import Job, PasswordResetRequest
from backoffice.password_reset import SEND_JOB
from tests.helpers import run_password_reset_jobs, url

pytestmark = pytest.mark.django_db

TOO_MANY = "Too many password reset requests. Try again in an hour."


def ask_reset(email: str, client_ip: str = "198.51.100.7", **headers):
    return Client(REMOTE_ADDR=client_ip, **headers).post(url("password_reset"), {"email": email})


def test_the_request_sends_nothing_and_does_the_same_for_a_registered_and_an_unknown_address(owner):
    for email in (owner.email, "nobody@nowhere.example"):
        response = ask_reset(email)
        assert response.status_code == 302 and response["Location"] == url("password_reset_done")

    # Nothing was sent inside the requests; each queued the same job with the same arguments.
    assert mail.outbox == []
    jobs = list(Job.objects.filter(func=SEND_JOB).order_by("created_at"))
    assert len(jobs) == 2 and jobs[0].kwargs.keys() == jobs[1].kwargs.keys()
    assert {key: value for key, value in jobs[0].kwargs.items() if key != "request_id"} == {
        key: value for key, value in jobs[1].kwargs.items() if key != "request_id"
    }

    run_password_reset_jobs()

    assert [message.to for message in mail.outbox] == [[owner.email]]
    assert "http://testserver/merchant/reset/" in mail.outbox[0].body


def test_requests_for_one_address_are_limited_whatever_the_client(owner, settings):
    settings.PASSWORD_RESET_LIMIT_PER_EMAIL = 2
    answers = [ask_reset(owner.email.upper(), client_ip=f"198.51.100.{n}") for n in range(1, 4)]

    assert [response.status_code for response in answers] == [302, 302, 429]
    assert TOO_MANY in answers[-1].content.decode()
    assert Job.objects.filter(func=SEND_JOB).count() == 2 == PasswordResetRequest.objects.count()
    # An unknown address gets the same limit and the same words.
    unknown = [ask_reset("nobody@nowhere.example", client_ip=f"203.0.113.{n}") for n in range(1, 4)]
    assert [response.status_code for response in unknown] == [302, 302, 429]
    assert TOO_MANY in unknown[-1].content.decode()


def test_requests_from_one_client_behind_the_proxy_are_limited_per_client(db, settings):
    settings.PASSWORD_RESET_LIMIT_PER_CLIENT = 2
    settings.TRUSTED_PROXY_COUNT = 1
    proxy = "10.0.0.2"

    def from_client(client_ip: str, email: str):
        return ask_reset(email, client_ip=proxy, HTTP_X_FORWARDED_FOR=f"1.2.3.4, {client_ip}")

    answers = [from_client("198.51.100.7", f"person{n}@example.com") for n in range(3)]
    assert [response.status_code for response in answers] == [302, 302, 429]
    # Another client behind the same proxy is not locked out by the first one.
    assert from_client("198.51.100.8", "someone@example.com").status_code == 302
    assert set(PasswordResetRequest.objects.values_list("client_address", flat=True)) == {
        "198.51.100.7",
        "198.51.100.8",
    }
