"""The TLS endpoint of `make run` (and of `veil serve` with a certificate: the same `veil.server`)
offers exactly Mozilla intermediate's key-exchange groups. Before, it also completed handshakes
over X448, P-521 and the finite-field groups, and a scanner checking the profile failed it."""

from __future__ import annotations

from tests.support.server import LiveServer
from tests.support.tls_probe import EXPECTED, INTERMEDIATE, OUTSIDE, accepted_groups, negotiated_group


def test_only_x25519_p256_and_p384_complete_a_handshake(server: LiveServer) -> None:
    # TLS 1.3: each group offered alone is its own key share, so each answer is about that group.
    assert accepted_groups(server.port, INTERMEDIATE, "1.3") == EXPECTED
    assert accepted_groups(server.port, OUTSIDE, "1.3") == dict.fromkeys(OUTSIDE)
    # TLS 1.2 uses the same list (the P-256 certificate needs P-256 among the client's groups).
    assert negotiated_group(server.port, "P-256", "1.2") == EXPECTED["P-256"]
    assert negotiated_group(server.port, "X448:P-521", "1.2") is None
    assert "tls_groups_not_restricted" not in server.logs()
    # Ordinary clients (httpx, Python's defaults) still connect.
    with server.client() as client:
        assert client.get("/healthz").status_code == 200
