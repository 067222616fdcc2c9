"""A strict Content-Security-Policy on the admin and the merchant portal, and pages that need
nothing more: no inline script, style or event handler anywhere in them."""

import re

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse
from django_rq.models import Dashboard

from payments import services
from payments.models import Membership
from tests.factories import MerchantFactory, UserFactory

pytestmark = pytest.mark.django_db

INLINE = {
    "inline script": re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.I),
    "style element": re.compile(r"<style[\s>]", re.I),
    "style attribute": re.compile(r"<[^>]+\sstyle=", re.I),
    "event handler": re.compile(r"<[^>]+\son[a-z]+=", re.I),
    "javascript: URL": re.compile(r"javascript:", re.I),
}


def policy(response) -> dict[str, str]:
    header = response.headers.get("Content-Security-Policy", "")
    return {part.split()[0]: part.strip() for part in header.split(";") if part.strip()}


def check_page(client, url):
    response = client.get(url)
    assert response.status_code == 200, url
    directives = policy(response)
    assert directives.get("script-src") == "script-src 'self'", url
    assert directives.get("style-src") == "style-src 'self'", url
    assert directives.get("default-src") == "default-src 'self'" and "frame-ancestors" in directives, url
    html = response.content.decode()
    found = {name: pattern.findall(html)[:3] for name, pattern in INLINE.items() if pattern.search(html)}
    assert not found, (url, found)


def test_admin_pages_have_a_strict_policy_and_nothing_inline(admin_client, admin_user, rf):
    merchant = MerchantFactory()
    payment = services.payment_create(
        merchant=merchant, amount_minor=1250, currency="EUR", payment_method="tok_success", idempotency_key="csp-1"
    )[0]
    payment = payment[0] if isinstance(payment, tuple) else payment
    urls = [reverse("admin:index"), reverse("admin:payments_payment_change", args=[payment.pk])]
    request = rf.get("/")
    request.user = admin_user
    for model, model_admin in admin.site._registry.items():
        if model is Dashboard:
            continue  # django-rq's own pages (its templates are not ours)
        info = (model._meta.app_label, model._meta.model_name)
        urls.append(reverse("admin:{}_{}_changelist".format(*info)))
        if model_admin.has_add_permission(request):
            urls.append(reverse("admin:{}_{}_add".format(*info)))
    for url in urls:
        check_page(admin_client, url)


def test_portal_pages_have_a_strict_policy_and_nothing_inline(db):
    user = UserFactory(username="olga-owner", is_staff=False)
    merchant = MerchantFactory()
    Membership.objects.create(user=user, merchant=merchant, role=Membership.Role.OWNER)
    payment = services.payment_create(
        merchant=merchant, amount_minor=1250, currency="EUR", payment_method="tok_success", idempotency_key="csp-2"
    )[0]
    payment = payment[0] if isinstance(payment, tuple) else payment
    check_page(Client(), "/merchant/login/")
    check_page(Client(), "/merchant/password-reset/")
    client = Client()
    client.force_login(user)
    for url in (
        "/merchant/",
        "/merchant/payments/",
        "/merchant/payments/new/",
        f"/merchant/payments/{payment.public_id}/",
        "/merchant/webhooks/",
    ):
        check_page(client, url)
