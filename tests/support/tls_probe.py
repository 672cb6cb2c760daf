"""Which key-exchange groups a TLS endpoint accepts, asked the way a scanner does: one handshake
per group with `openssl s_client -groups G`, which offers that group alone."""

from __future__ import annotations

import re
import shutil
import subprocess

# Mozilla "intermediate": exactly these (OpenSSL's names for X25519, P-256, P-384).
INTERMEDIATE = ("X25519", "P-256", "P-384")
# What OpenSSL would offer besides, by default: none of them may complete a handshake.
OUTSIDE = ("X448", "P-521", "ffdhe2048", "ffdhe3072")

# "Server Temp Key: X25519, 253 bits", "... ECDH, secp384r1, 384 bits", "... DH, 2048 bits"
_TEMP_KEY = re.compile(r"Server Temp Key: ([^\n]+?), \d+ bits")


def openssl() -> str:
    binary = shutil.which("openssl")
    assert binary, "the openssl command is needed (apt-get install openssl)"
    return binary


def negotiated_group(port: int, group: str, version: str, host: str = "localhost") -> str | None:
    """The key exchange of a handshake offering only `group` over `version` ("1.2" or "1.3"),
    as s_client reports it ("X25519", "ECDH, prime256v1", ...), or None when it fails."""
    done = subprocess.run(
        [
            openssl(),
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-servername",
            host,
            f"-tls{version.replace('.', '_')}",
            "-groups",
            group,
        ],
        input=b"",
        capture_output=True,
        timeout=20,
        check=False,
    )
    output = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    found = _TEMP_KEY.search(output)
    if found is None or "Cipher is (NONE)" in output:
        return None
    return found.group(1)


def accepted_groups(port: int, groups: tuple[str, ...], version: str) -> dict[str, str | None]:
    return {group: negotiated_group(port, group, version) for group in groups}


# s_client's report for each group it offered alone, when the server accepts it.
EXPECTED = {"X25519": "X25519", "P-256": "ECDH, prime256v1", "P-384": "ECDH, secp384r1"}
