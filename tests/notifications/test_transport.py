"""SSRF: every spelling of an internal address is refused when an endpoint is saved and
again at delivery, including names whose DNS answer changes between the two."""

import ipaddress

import pytest
import requests
from django.core.exceptions import ValidationError

from backoffice.models import AuditEntry
from notifications.endpoints import webhook_endpoint_create, webhook_test_send
from notifications.models import DeliveryAttempt, NotificationStatus, WebhookEndpoint
from notifications.transport import WebhookURLError, address_problem, webhook_url_check
from tests.helpers import PUBLIC_ADDRESS, run_due_deliveries

# Hosts that are, or spell, a loopback / private / link-local / metadata / CG-NAT address.
INTERNAL_URLS = [
    "https://127.0.0.1/hooks",
    "https://127.1/hooks",
    "https://0x7f000001/hooks",
    "https://2130706433/hooks",
    "https://0177.0.0.1/hooks",
    "https://0x7f.1/hooks",
    "https://127.000.000.001/hooks",
    "https://127.0.0.1.:8443/hooks",
    "https://①②⑦.0.0.1/hooks",
    "https://localhost/hooks",
    "https://LOCALHOST./hooks",
    "https://api.localhost/hooks",
    "https://[::1]/hooks",
    "https://[::ffff:127.0.0.1]/hooks",
    "https://[::ffff:7f00:1]/hooks",
    "https://[0:0:0:0:0:ffff:7f00:1]/hooks",
    "https://[::127.0.0.1]/hooks",
    "https://[64:ff9b::7f00:1]/hooks",
    "https://[2002:7f00:1::]/hooks",
    "https://[::ffff:0:7f00:1]/hooks",
    "https://[fe80::1%25eth0]/hooks",
    "https://[fe80::1]/hooks",
    "https://[fd00::1]/hooks",
    "https://[fd00:ec2::254]/latest/meta-data/",
    "https://10.0.0.1/hooks",
    "https://0xa000001/hooks",
    "https://167772161/hooks",
    "https://172.16.5.4/hooks",
    "https://192.168.1.1/hooks",
    "https://169.254.169.254/latest/meta-data/",
    "https://0xa9fea9fe/latest/meta-data/",
    "https://2852039166/latest/meta-data/",
    "https://[::ffff:169.254.169.254]/latest/meta-data/",
    "https://169.254.10.10/hooks",
    "https://100.64.0.1/hooks",
    "https://100.100.100.200/latest/meta-data/",
    "https://0.0.0.0/hooks",
    "https://0/hooks",
    "https://[::]/hooks",
    "https://224.0.0.1/hooks",
    "https://255.255.255.255/hooks",
    "https://metadata.google.internal/computeMetadata/v1/",
    "https://printer.local/hooks",
]

# Addresses a merchant's name may resolve to that are refused (with the IP in the message).
INTERNAL_ADDRESSES = [
    "127.0.0.1",
    "127.8.9.10",
    "10.0.0.7",
    "172.31.255.1",
    "192.168.0.10",
    "169.254.169.254",
    "100.64.1.1",
    "0.0.0.0",
    "::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.7",
    "::127.0.0.1",
    "fe80::1",
    "fd12:3456::1",
    "64:ff9b::a00:7",
]

MALFORMED_URLS = [
    "",
    "hooks.merchant.example/hooks",
    "ftp://hooks.merchant.example/hooks",
    "file:///etc/passwd",
    "http://hooks.merchant.example/hooks",  # plain http to a public host
    "https://user:secret@hooks.merchant.example/hooks",
    "https://hooks.merchant.example@127.0.0.1/hooks",
    "https://hooks.merchant.example\\@127.0.0.1/hooks",
    "https://hooks.merchant.example:99999/hooks",
    "https://hooks merchant.example/hooks",
    "https://1.2.3.4.5/hooks",
    "https://intranet/hooks",
    "https://unknown.merchant.example/hooks",  # does not resolve
]


# --- at save -----------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("url", INTERNAL_URLS)
def test_internal_address_in_any_spelling_is_refused_at_save(merchant, public_dns, url):
    with pytest.raises(ValidationError) as refused:
        webhook_endpoint_create(merchant=merchant, url=url)
    assert "public" in refused.value.messages[0] or "local name" in refused.value.messages[0]
    assert not WebhookEndpoint.objects.exists()
    assert not AuditEntry.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("address", INTERNAL_ADDRESSES)
def test_name_resolving_to_internal_address_is_refused_at_save(merchant, dns, address):
    dns.answer("hooks.merchant.example", address)
    with pytest.raises(ValidationError) as refused:
        webhook_endpoint_create(merchant=merchant, url="https://hooks.merchant.example/hooks")
    message = refused.value.messages[0]
    assert "resolves to an address that is not public" in message
    assert str(ipaddress.ip_address(address)) not in message  # internal answers are not echoed
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.django_db
def test_one_internal_answer_among_public_ones_is_enough_to_refuse(merchant, dns):
    dns.answer("hooks.merchant.example", PUBLIC_ADDRESS, "10.0.0.7")
    with pytest.raises(ValidationError, match="resolves to an address that is not public"):
        webhook_endpoint_create(merchant=merchant, url="https://hooks.merchant.example/hooks")


@pytest.mark.django_db
@pytest.mark.parametrize("url", MALFORMED_URLS)
def test_malformed_or_unsafe_urls_are_refused_with_a_clear_message(merchant, public_dns, url):
    with pytest.raises(ValidationError) as refused:
        webhook_endpoint_create(merchant=merchant, url=url)
    assert refused.value.messages[0].endswith(".")
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.django_db
def test_public_https_endpoint_is_saved_with_a_fresh_secret(merchant, public_dns):
    endpoint = webhook_endpoint_create(merchant=merchant, url="https://hooks.merchant.example/hooks")
    other = webhook_endpoint_create(merchant=merchant, url="https://hooks.merchant.example/other")
    assert endpoint.secret.startswith("whsec_") and endpoint.secret != other.secret
    assert endpoint.enabled


@pytest.mark.django_db
def test_unknown_event_types_are_refused(merchant, public_dns):
    with pytest.raises(ValidationError, match="Unknown event types: payment.exploded"):
        webhook_endpoint_create(
            merchant=merchant, url="https://hooks.merchant.example/h", event_types=["payment.exploded"]
        )
    assert not WebhookEndpoint.objects.exists()


def test_loopback_setting_allows_loopback_and_nothing_else(settings, dns):
    settings.WEBHOOKS_ALLOW_LOOPBACK = True
    assert webhook_url_check("http://127.0.0.1:8080/hooks").addresses == ("127.0.0.1",)
    assert webhook_url_check("http://localhost:8080/hooks").addresses
    for url in ("https://10.0.0.1/", "https://169.254.169.254/", "https://100.64.0.1/", "https://[fe80::1]/"):
        with pytest.raises(WebhookURLError):
            webhook_url_check(url)
    dns.answer("hooks.merchant.example", PUBLIC_ADDRESS)
    with pytest.raises(WebhookURLError, match="https://"):
        webhook_url_check("http://hooks.merchant.example/hooks")  # http only ever to loopback


def test_loopback_is_refused_by_default(settings):
    assert settings.WEBHOOKS_ALLOW_LOOPBACK is False
    with pytest.raises(WebhookURLError, match="loopback"):
        webhook_url_check("https://127.0.0.1/hooks")


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("169.254.169.254", "metadata"),
        ("100.64.0.1", "CG-NAT"),
        ("10.1.2.3", "private"),
        ("127.0.0.2", "loopback"),
        ("fe80::1", "link-local"),
        ("::ffff:192.168.0.1", "IPv4-in-IPv6"),
        ("2002:a00:1::", "translation"),
        (PUBLIC_ADDRESS, None),
        ("2606:2800:220:1:248:1893:25c8:1946", None),
    ],
)
def test_address_problem_names_the_kind_of_address(address, words):
    problem = address_problem(ipaddress.ip_address(address), allow_loopback=False)
    assert problem is None if words is None else words in problem


# --- at delivery ---------------------------------------------------------------------------------


@pytest.fixture
def public_endpoint(merchant, public_dns):
    return webhook_endpoint_create(merchant=merchant, url="https://hooks.merchant.example/hooks")


def _deliver_test_webhook(endpoint, operator) -> DeliveryAttempt:
    notification = webhook_test_send(endpoint=endpoint, actor=operator)
    run_due_deliveries()
    notification.refresh_from_db()
    assert notification.status == NotificationStatus.PENDING  # refused tries are retried on schedule
    assert notification.next_attempt_at is not None
    return notification.attempts.get()


@pytest.mark.django_db
@pytest.mark.parametrize("address", INTERNAL_ADDRESSES)
def test_dns_switched_to_internal_address_after_save_is_refused_at_delivery(
    public_endpoint, operator, dns, network_guard, address
):
    dns.answer("hooks.merchant.example", address)
    attempt = _deliver_test_webhook(public_endpoint, operator)
    assert attempt.succeeded is False and attempt.http_status is None
    assert attempt.error.startswith("refused:") and "not public" in attempt.error
    assert network_guard == []


@pytest.mark.django_db
@pytest.mark.parametrize("url", INTERNAL_URLS)
def test_internal_url_written_past_validation_is_refused_at_delivery(public_endpoint, operator, network_guard, url):
    WebhookEndpoint.objects.filter(pk=public_endpoint.pk).update(url=url)  # e.g. a raw SQL fix gone wrong
    attempt = _deliver_test_webhook(public_endpoint, operator)
    assert attempt.destination == url
    assert attempt.error.startswith("refused:")
    assert network_guard == []


@pytest.mark.django_db
@pytest.mark.parametrize("rebound_to", ["10.0.0.7", "169.254.169.254", "::127.0.0.1"])
def test_dns_rebinding_between_check_and_connect_is_refused_at_the_connection(
    public_endpoint, operator, dns, network_guard, rebound_to
):
    # Our check sees a public answer; the lookup made for the connection itself gets an
    # internal one. The connection goes only to the address checked at that moment.
    dns.answer_in_turn("hooks.merchant.example", [PUBLIC_ADDRESS], [rebound_to])
    attempt = _deliver_test_webhook(public_endpoint, operator)
    assert attempt.error.startswith("refused: the connection would go to")
    assert network_guard == []
    assert dns.lookups.count("hooks.merchant.example") == 3  # at save, our check, the connection


@pytest.mark.django_db
def test_delivery_connects_to_the_checked_address_with_the_merchants_host_name(
    merchant, operator, dns, receiver, loopback_allowed
):
    dns.answer("hooks.merchant.example", "127.0.0.1")
    url = f"http://hooks.merchant.example:{receiver.port}/hooks"
    receiver.expect_oneshot_request("/hooks", method="POST").respond_with_data("ok")
    endpoint = webhook_endpoint_create(merchant=merchant, url=url)
    notification = webhook_test_send(endpoint=endpoint, actor=operator)
    run_due_deliveries()
    notification.refresh_from_db()
    assert notification.status == NotificationStatus.DELIVERED
    ((request, _response),) = receiver.log
    assert request.headers["Host"] == f"hooks.merchant.example:{receiver.port}"


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (requests.exceptions.SSLError("[SSL: CERTIFICATE_VERIFY_FAILED] _ssl.c:1006"), "TLS handshake failed"),
        (requests.exceptions.ConnectionError("HTTPSConnectionPool(host=...): Max retries"), "could not connect"),
    ],
)
def test_delivery_errors_are_told_in_words_not_exceptions(error, text):
    from notifications.transport import _delivery_error_text

    message = _delivery_error_text(error)
    assert text in message and "_ssl.c" not in message and "HTTPSConnectionPool" not in message
