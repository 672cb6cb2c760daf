from ipaddress import ip_network

from veil.core.web.middleware import client_address

GATEWAY = (ip_network("10.0.0.2/32"),)


def scope(peer: str, forwarded: str | None = None) -> dict[str, object]:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return {"client": (peer, 5555), "headers": headers}


def test_untrusted_peer_cannot_choose_its_address() -> None:
    assert client_address(scope("203.0.113.9", "1.2.3.4"), GATEWAY) == "203.0.113.9"
    assert client_address(scope("203.0.113.9", "1.2.3.4"), ()) == "203.0.113.9"


def test_trusted_proxy_passes_the_nearest_untrusted_hop() -> None:
    # The client may prepend anything; only what the trusted gateway appended counts.
    assert client_address(scope("10.0.0.2", "6.6.6.6, 198.51.100.7"), GATEWAY) == "198.51.100.7"


def test_garbage_forwarded_value_falls_back_to_the_peer() -> None:
    assert client_address(scope("10.0.0.2", "not-an-ip"), GATEWAY) == "10.0.0.2"
