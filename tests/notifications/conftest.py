"""Fixtures for webhook tests: a fake DNS, a guard that lets no test connect anywhere but
loopback, receivers on 127.0.0.1, and the usual public name (run_due_deliveries is in tests.helpers)."""

import ipaddress
import socket
import threading

import pytest

from notifications.endpoints import webhook_endpoint_create
from tests.helpers import PUBLIC_ADDRESS

_real_getaddrinfo = socket.getaddrinfo
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


class FakeDNS:
    """Answers for names the tests choose; numeric hosts resolve as the real resolver does
    (without the network), every other name does not exist."""

    def __init__(self):
        self.answers: dict[str, list[list[str]]] = {}
        self.lookups: list[str] = []

    def answer(self, name: str, *addresses: str) -> None:
        """Every lookup of `name` from now on returns these addresses."""
        self.answers[name] = [list(addresses)]

    def answer_in_turn(self, name: str, *answers: list[str]) -> None:
        """The first lookup gets the first answer, and so on; the last one repeats."""
        self.answers[name] = [list(answer) for answer in answers]

    def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
        name = host.decode() if isinstance(host, bytes) else str(host)
        self.lookups.append(name)
        try:
            return _real_getaddrinfo(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        except socket.gaierror:
            pass
        if name == "localhost":
            return _real_getaddrinfo(host, port, family, type, proto, flags)
        turns = self.answers.get(name.rstrip(".").lower())
        if not turns:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        addresses = turns.pop(0) if len(turns) > 1 else turns[0]
        results = []
        for address in addresses:
            ip = ipaddress.ip_address(address)
            if ip.version == 4:
                results.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 0))))
            else:
                results.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, int(port or 0), 0, 0)))
        return results


@pytest.fixture(autouse=True)
def dns(monkeypatch) -> FakeDNS:
    fake = FakeDNS()
    monkeypatch.setattr(socket, "getaddrinfo", fake.getaddrinfo)
    return fake


@pytest.fixture
def public_dns(dns) -> FakeDNS:
    """The merchants' usual host name resolves to a public address."""
    dns.answer("hooks.merchant.example", PUBLIC_ADDRESS)
    return dns


class OffLoopbackConnection(BaseException):
    """Not an OSError: no library may swallow it. A test that raises it has failed."""


@pytest.fixture(autouse=True)
def network_guard(monkeypatch) -> list:
    """No test here may connect anywhere but loopback (or a Unix socket): a refusal that
    failed would otherwise send traffic to a private or public address."""
    refused: list = []

    def check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            if not ipaddress.ip_address(str(address[0]).split("%", 1)[0]).is_loopback:
                refused.append(address)
                raise OffLoopbackConnection(f"a test tried to connect to {address!r}")

    def connect(sock, address):
        check(sock, address)
        return _real_connect(sock, address)

    def connect_ex(sock, address):
        check(sock, address)
        return _real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return refused


@pytest.fixture
def loopback_allowed(settings):
    settings.WEBHOOKS_ALLOW_LOOPBACK = True


@pytest.fixture
def fast_timeout(settings):
    settings.WEBHOOKS_TIMEOUT_SECONDS = 0.5


@pytest.fixture
def receiver(httpserver_ipv4):
    """A real HTTP server on 127.0.0.1 standing in for the merchant's webhook receiver."""
    yield httpserver_ipv4
    httpserver_ipv4.clear()


@pytest.fixture
def endpoint(merchant, receiver, loopback_allowed):
    return webhook_endpoint_create(merchant=merchant, url=receiver.url_for("/hooks"))


@pytest.fixture
def hanging_receiver():
    """A receiver that accepts the connection and never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/hooks"
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    listener.close()
