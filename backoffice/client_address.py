"""The client's address, for log-in throttling (django-axes's AXES_CLIENT_IP_CALLABLE).

With no proxy in front (PAYDESK_TRUSTED_PROXY_COUNT=0), REMOTE_ADDR: an X-Forwarded-For header is
whatever the client wrote. Behind N proxies of ours, each appends the address that connected to
it, so the N-th entry from the right of X-Forwarded-For is the address our outermost proxy saw;
everything left of it is the client's own writing and is ignored. With PAYDESK_TRUSTED_PROXY_IPS
set, the header is believed only when REMOTE_ADDR is one of those proxies.
"""

import ipaddress

from django.conf import settings


def _is_trusted_proxy(address: str) -> bool:
    networks = settings.TRUSTED_PROXY_IPS
    if not networks:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(network, strict=False) for network in networks)


def client_address(request) -> str:
    remote_addr = request.META.get("REMOTE_ADDR", "")
    count = settings.TRUSTED_PROXY_COUNT
    if count <= 0 or not _is_trusted_proxy(remote_addr):
        return remote_addr
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if len(forwarded) < count:
        return remote_addr  # not through all our proxies: only the connection itself is known
    candidate = forwarded[-count]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return remote_addr
