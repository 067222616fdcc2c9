"""Getting a signed webhook to a merchant without becoming a way into our own network.

A merchant's URL is checked when the endpoint is saved and again before every delivery:
its host, in whatever spelling, and every address its name resolves to, must be public.
The POST then goes through requests-hardened, which resolves the name once more, checks
the address and connects to that very address (so a DNS answer that changes between the
check and the connection cannot slip through); we check that final address against our
own, stricter, rules as well. Redirects are never followed and proxies from the
environment are never used.
"""

import ipaddress
import logging
import re
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna
import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from requests_hardened import Config, HTTPSession
from requests_hardened.ip_filter import InvalidIPAddress
from requests_hardened.ip_filter_adapter import IPFilterAdapter

MAX_URL_LENGTH = 2000
RESPONSE_EXCERPT_BYTES = 1024
USER_AGENT = "Paydesk-Webhooks/1.0"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud instance metadata services: named in the refusal, because they are what an SSRF hunts.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
CG_NAT = ipaddress.ip_network("100.64.0.0/10")
# IPv6 ranges that carry or translate IPv4 (or tunnel elsewhere): a receiver never needs
# them and each is a way to spell an internal IPv4 address.
IPV6_TRANSLATION_RANGES = tuple(
    ipaddress.ip_network(network)
    for network in (
        "64:ff9b::/96",  # NAT64
        "64:ff9b:1::/48",  # local-use NAT64
        "2002::/16",  # 6to4
        "2001::/32",  # Teredo
        "::ffff:0:0:0/96",  # SIIT IPv4-translated
        "5f00::/16",  # segment routing
        "2001:20::/28",  # ORCHIDv2
    )
)
# Names that never point at the public internet.
NON_PUBLIC_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa")
HOSTNAME_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# WHATWG URL: a host whose last label is a number is an IPv4 address in some spelling.
NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")

logger = logging.getLogger(__name__)


class WebhookURLError(ValidationError):
    """A webhook URL we refuse to send to; the message is fit to show the merchant."""


@dataclass(frozen=True)
class CheckedURL:
    url: str
    host: str
    port: int
    addresses: tuple[str, ...]


def address_problem(address: IPAddress, *, allow_loopback: bool) -> str | None:
    """Why an address is not a public one a merchant's receiver may live on, or None."""
    if allow_loopback and address.is_loopback:
        return None
    if address.version == 6:
        embedded = address.ipv4_mapped
        if embedded is None and int(address) >> 32 == 0 and int(address) > 1:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)  # IPv4-compatible ::a.b.c.d
        if embedded is not None:
            problem = address_problem(embedded, allow_loopback=allow_loopback)
            return f"an IPv4-in-IPv6 spelling of {problem}" if problem else None
        if any(address in network for network in IPV6_TRANSLATION_RANGES):
            return f"an IPv6 translation or tunnel address ({address})"
    if address in METADATA_ADDRESSES:
        return f"a cloud metadata address ({address})"
    if address.is_loopback:
        return f"a loopback address ({address})"
    if address.is_unspecified:
        return f"an unspecified address ({address})"
    if address.is_link_local:
        return f"a link-local address ({address})"
    if address.version == 4 and address in CG_NAT:
        return f"a CG-NAT shared address ({address})"
    if address.is_private:
        return f"a private address ({address})"
    if address.is_multicast:
        return f"a multicast address ({address})"
    if address.is_reserved or not address.is_global:
        return f"a reserved, non-public address ({address})"
    return None


def _refuse(message: str) -> WebhookURLError:
    return WebhookURLError(message, code="unsafe_webhook_url")


def _literal_address(host: str) -> IPAddress | None:
    """The address a host spells, in any form a resolver accepts (127.1, 0x7f000001,
    2130706433, 0177.0.0.1, ::ffff:127.0.0.1), or None for a name."""
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise _refuse(f"{host!r} is not a valid IPv6 address.")
    last_label = host.rsplit(".", 1)[-1]
    if NUMERIC_LABEL.match(last_label):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            raise _refuse(f"{host!r} is neither a valid IPv4 address nor a domain name.")
    return None


def _canonical_host(raw_host: str) -> str:
    host = raw_host.lower()
    if host.endswith("."):
        host = host[:-1]
    if not host.isascii():
        # What requests would connect to: UTS 46 maps fullwidth and circled digits too.
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError:
            raise _refuse("The host name is not a valid internationalised domain name.")
    return host


def webhook_url_check(url: str) -> CheckedURL:
    """Parse a merchant's webhook URL and resolve it; refuse it unless every address it
    reaches is public. Raises WebhookURLError with a message for the merchant."""
    allow_loopback = settings.WEBHOOKS_ALLOW_LOOPBACK
    if not isinstance(url, str) or not url.strip():
        raise _refuse("Enter the URL of your webhook receiver.")
    if len(url) > MAX_URL_LENGTH:
        raise _refuse(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    if any(char.isspace() or ord(char) < 0x20 or char == "\x7f" or char == "\\" for char in url):
        raise _refuse("The URL contains spaces, backslashes or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _refuse("The URL is not valid (check the host and the port).")
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise _refuse("The URL must start with https://.")
    if "@" in parts.netloc:
        raise _refuse("A user name or password in the URL is not accepted; authenticate with the signature.")
    if not parts.hostname:
        raise _refuse("The URL has no host.")
    if "%" in parts.hostname:
        raise _refuse("IPv6 zone identifiers (link-local) are not accepted; webhooks only go to public addresses.")
    host = _canonical_host(parts.hostname)
    port = port or (443 if scheme == "https" else 80)
    if port == 0:
        raise _refuse("The port must be between 1 and 65535.")

    literal = _literal_address(host)
    if literal is not None:
        addresses = [literal]
    else:
        labels = host.split(".")
        if len(host) > 253 or not all(HOSTNAME_LABEL.match(label) for label in labels):
            raise _refuse(f"{host!r} is not a valid domain name.")
        is_localhost = host == "localhost" or host.endswith(".localhost")
        if not (allow_loopback and is_localhost):
            if is_localhost or host.endswith(NON_PUBLIC_SUFFIXES):
                raise _refuse(f"{host!r} is a local name, not one on the public internet.")
            if len(labels) < 2:
                raise _refuse(f"{host!r} is not a fully qualified domain name.")
        try:
            answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            raise WebhookURLError(f"{host!r} does not resolve to an address.", code="unresolvable_webhook_url")
        addresses = []
        for family, _type, _proto, _canonname, sockaddr in answers:
            if family in (socket.AF_INET, socket.AF_INET6):
                addresses.append(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]))
        if not addresses:
            raise WebhookURLError(f"{host!r} does not resolve to an address.", code="unresolvable_webhook_url")
    for address in addresses:
        problem = address_problem(address, allow_loopback=allow_loopback)
        if problem:
            if literal is not None:
                raise _refuse(f"{host!r} is {problem}; webhooks only go to public addresses.")
            # A name's answer is not repeated: the message must not map internal names for merchants.
            raise _refuse(f"{host!r} resolves to an address that is not public; webhooks only go to public addresses.")
    if scheme == "http" and not (allow_loopback and all(address.is_loopback for address in addresses)):
        raise _refuse("The URL must start with https://: webhooks carry payment data.")
    return CheckedURL(url=url, host=host, port=port, addresses=tuple(str(address) for address in addresses))


def validate_webhook_url(url: str) -> None:
    """Model field validator: the endpoint's URL is checked (and resolved) when it is saved."""
    webhook_url_check(url)


class UnsafeAddressError(requests.RequestException):
    """The address requests-hardened was about to connect to breaks our rules."""


class _CheckedAddressAdapter(IPFilterAdapter):
    """requests-hardened's adapter (resolve, refuse private addresses, connect to the
    checked IP), plus our stricter rules on that same IP."""

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        address = ipaddress.ip_address(host_params["host"].strip("[]"))
        problem = address_problem(address, allow_loopback=self._allow_loopback)
        if problem:
            raise UnsafeAddressError(f"the connection would go to {problem}")
        return host_params, pool_kwargs


def _session(timeout: float) -> HTTPSession:
    allow_loopback = settings.WEBHOOKS_ALLOW_LOOPBACK
    session = HTTPSession(
        Config(
            ip_filter_enable=True,
            ip_filter_allow_loopback_ips=allow_loopback,
            never_redirect=True,
            default_timeout=(timeout, timeout),
            user_agent_override=USER_AGENT,
        )
    )
    for prefix, is_https in (("http://", False), ("https://", True)):
        session.mount(prefix, _CheckedAddressAdapter(is_https_proto=is_https, allow_loopback=allow_loopback))
    session.trust_env = False  # no proxies or .netrc from the environment
    return session


@dataclass(frozen=True)
class DeliveryOutcome:
    """What one try of a notification came to (a webhook's POST or an e-mail)."""

    succeeded: bool
    duration_ms: int
    http_status: int | None = None
    response_excerpt: str = ""
    error: str = ""

    @property
    def endpoint_gone(self) -> bool:
        return self.http_status == 410


def _read_excerpt(response: requests.Response, deadline: float) -> str:
    """At most RESPONSE_EXCERPT_BYTES of the body, and no reading past the deadline."""
    excerpt = b""
    try:
        for chunk in response.iter_content(chunk_size=256):
            excerpt += chunk
            if len(excerpt) >= RESPONSE_EXCERPT_BYTES or time.monotonic() > deadline:
                break
    except requests.RequestException:
        pass  # an excerpt is a courtesy; the status code already decided the outcome
    return excerpt[:RESPONSE_EXCERPT_BYTES].decode("utf-8", errors="replace")


def webhook_post_rollback_unsafe(*, url: str, body: bytes, headers: dict[str, str]) -> DeliveryOutcome:
    """POST a signed body once. Not transactional (it is a network call): call it outside
    any transaction or lock. Never raises for the receiver's faults: they come back as the
    response's error."""
    timeout = settings.WEBHOOKS_TIMEOUT_SECONDS
    started = time.monotonic()

    def outcome(*, error: str, http_status: int | None = None, response_excerpt: str = "") -> DeliveryOutcome:
        return DeliveryOutcome(
            succeeded=http_status is not None and 200 <= http_status < 300 and not error,
            duration_ms=int((time.monotonic() - started) * 1000),
            http_status=http_status,
            response_excerpt=response_excerpt,
            error=error,
        )

    try:
        checked = webhook_url_check(url)
    except WebhookURLError as error:
        return outcome(error=f"refused: {error.messages[0]}")
    try:
        with _session(timeout) as session:
            response = session.post(
                checked.url,
                data=body,
                headers={"Content-Type": "application/json", **headers},
                timeout=(timeout, timeout),
                allow_redirects=False,
                stream=True,
            )
            with response:
                excerpt = _read_excerpt(response, deadline=started + 2 * timeout)
                problem = ""
                if 300 <= response.status_code < 400:
                    problem = "redirect not followed: only a 2xx answer counts as delivered"
                elif not 200 <= response.status_code < 300:
                    problem = f"HTTP {response.status_code}"
                return outcome(error=problem, http_status=response.status_code, response_excerpt=excerpt)
    except UnsafeAddressError as error:
        return outcome(error=f"refused: {error}")
    except InvalidIPAddress as error:
        return outcome(error=f"refused: the connection would go to a non-public address ({error})")
    except requests.exceptions.Timeout:
        return outcome(error=f"timed out after {timeout:g} s")
    except requests.RequestException as error:
        logger.info("webhook delivery to %s failed: %r", checked.host, error)  # the detail, for staff
        return outcome(error=_delivery_error_text(error))


def _delivery_error_text(error: requests.RequestException) -> str:
    """What went wrong, in words a merchant can act on (the exception itself goes to the log)."""
    if isinstance(error, requests.exceptions.SSLError):
        return "TLS handshake failed: check the endpoint's certificate (it must be valid for this host name)"
    if isinstance(error, requests.exceptions.ConnectionError):
        return "could not connect: nothing answered at this address and port"
    if isinstance(error, requests.exceptions.ContentDecodingError | requests.exceptions.ChunkedEncodingError):
        return "the answer could not be read (broken encoding)"
    return f"request failed ({type(error).__name__})"
