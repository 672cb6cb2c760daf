"""The group list reaches OpenSSL: in-memory handshakes between a server context built by
`veil.server` and clients limited (the same way) to one group each."""

from __future__ import annotations

import ctypes
import ssl
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from veil.core import tls_groups
from veil.core.tls_groups import VERIFIED_PYTHONS, restrict_groups
from veil.devstack.tls import ensure_dev_certificates
from veil.server import server_tls_context


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> bool:
    """Drive a TLS handshake through memory buffers; True when both sides complete it."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, side in (("client", client_side), ("server", server_side)):
            if done[name]:
                continue
            try:
                side.do_handshake()
                done[name] = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                return False
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return True
    return False


@pytest.fixture(scope="module")
def server_and_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    certs = ensure_dev_certificates(tmp_path_factory.mktemp("tls"))
    return server_tls_context(certs.cert_file, certs.key_file), certs.ca_file


def _client(ca: Path, group: str, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = context.maximum_version = version
    assert restrict_groups(context, group)
    return context


@pytest.mark.parametrize(
    ("group", "accepted"),
    [
        ("X25519", True),
        ("P-256", True),
        ("P-384", True),
        ("X448", False),
        ("P-521", False),
        ("ffdhe2048", False),
    ],
)
def test_the_server_completes_handshakes_over_the_intermediate_groups_only(
    server_and_ca: tuple[ssl.SSLContext, Path], group: str, accepted: bool
) -> None:
    # TLS 1.3: a client offering one group alone gets a handshake only if the server has it.
    server, ca = server_and_ca
    assert _handshake(server, _client(ca, group, ssl.TLSVersion.TLSv1_3)) is accepted


def test_tls_12_uses_the_same_groups(server_and_ca: tuple[ssl.SSLContext, Path]) -> None:
    server, ca = server_and_ca
    assert _handshake(server, _client(ca, "P-256", ssl.TLSVersion.TLSv1_2))
    assert not _handshake(server, _client(ca, "X448:P-521", ssl.TLSVersion.TLSv1_2))


def test_without_the_list_openssl_would_accept_x448(server_and_ca: tuple[ssl.SSLContext, Path]) -> None:
    """The control: what the probe above catches is real (OpenSSL's default list has X448)."""
    _, ca = server_and_ca
    certs = ensure_dev_certificates(ca.parent.parent)
    default = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    default.load_cert_chain(certs.cert_file, certs.key_file)
    assert _handshake(default, _client(ca, "X448", ssl.TLSVersion.TLSv1_3))


def test_an_unknown_group_list_is_reported_not_raised() -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    assert restrict_groups(context, "no-such-group") is False


def test_this_python_is_a_verified_layout() -> None:
    """The handshake tests above exercise the ctypes path only on a verified CPython: make sure
    the interpreter running them is one (3.11 in the development image)."""
    assert sys.implementation.name == "cpython"
    assert sys.version_info[:2] in VERIFIED_PYTHONS


def test_an_unverified_python_reads_no_memory_and_keeps_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """The risk: a guessed offset on a CPython whose layout differs hands OpenSSL a wrong pointer
    and the process crashes. On a version not verified, nothing is read and a warning says so."""

    def no_raw_reads(*_: object) -> None:
        raise AssertionError("read the SSLContext object's memory")

    monkeypatch.setattr(tls_groups, "VERIFIED_PYTHONS", frozenset())
    monkeypatch.setattr(ctypes.c_void_p, "from_address", no_raw_reads)
    monkeypatch.setattr(tls_groups, "_libssl", no_raw_reads)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with capture_logs() as logs:
        assert restrict_groups(context) is False
    assert [entry["event"] for entry in logs] == ["tls_groups_not_restricted"]
    assert "not a verified layout" in logs[0]["reason"]
