"""The key-exchange groups a TLS server offers: exactly Mozilla "intermediate"'s X25519, P-256 and
P-384 (the nginx gateway says the same with `ssl_ecdh_curve X25519:prime256v1:secp384r1`).

OpenSSL's defaults add X448, P-521 and the finite-field groups, and a scanner checking the
intermediate profile (sslyze, Mozilla's observatory) fails the endpoint for that alone. Python's
`ssl` module cannot say so before 3.13 at the earliest: `SSLContext.set_ecdh_curve` sets one curve,
which would drop X25519 or P-384. So the group list is set with OpenSSL's own
`SSL_CTX_set1_groups_list`, through ctypes, on the context Python built:

- `SSL_CTX_set1_groups_list(ctx, list)` is a macro for `SSL_CTX_ctrl(ctx, 92, 0, list)`, part of
  OpenSSL's ABI since 1.1.0; it governs TLS 1.3 key shares and TLS 1.2 ECDHE curves alike.
- The `SSL_CTX *` is the first member after the object header of CPython's `PySSLContext`
  (Modules/_ssl.c, unchanged from 3.6 to 3.13), so it sits at `id(context) + object.__basicsize__`.
- Symbols are looked up through the `_ssl` extension's own handle, so they are those of the very
  libssl that built the context, never another copy installed on the system.
- Before writing anything the pointer is checked: OpenSSL's `SSL_CTX_get_options` on it must
  equal what Python reports as `context.options`. If any of this does not hold (another Python,
  a statically linked OpenSSL), the defaults stay and a warning is logged; the tests of
  `make test` connect with each group and fail if the list is not in force.

Rejected: an OpenSSL configuration file (`OPENSSL_CONF` with `Groups = X25519:P-256:P-384` in a
`system_default` section). It has to be in the environment before OpenSSL initialises, replaces
the system's configuration, and applies to every TLS client of the process as well (PostgreSQL,
S3, SMTP), where the server has no business choosing.
"""

from __future__ import annotations

import ctypes
import ssl

from veil.core.logging import get_logger

log = get_logger(__name__)

# OpenSSL's names: P-256 is prime256v1, P-384 secp384r1.
INTERMEDIATE_GROUPS = "X25519:P-256:P-384"
_SSL_CTRL_SET_GROUPS_LIST = 92


def _libssl() -> ctypes.CDLL:
    import _ssl  # the extension module that links libssl

    path = getattr(_ssl, "__file__", None)
    if path is None:
        raise OSError("the ssl module is built into the interpreter")
    lib = ctypes.CDLL(path)
    lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    lib.SSL_CTX_ctrl.restype = ctypes.c_long
    lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
    lib.SSL_CTX_get_options.restype = ctypes.c_uint64
    return lib


def restrict_groups(context: ssl.SSLContext, groups: str = INTERMEDIATE_GROUPS) -> bool:
    """Offer only `groups` on `context`; False (and a warning) if they could not be set."""
    try:
        lib = _libssl()
        ctx = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
        if not ctx or lib.SSL_CTX_get_options(ctx) != int(context.options):
            raise OSError("unexpected layout of ssl.SSLContext")
        if lib.SSL_CTX_ctrl(ctx, _SSL_CTRL_SET_GROUPS_LIST, 0, groups.encode()) != 1:
            raise OSError(f"OpenSSL refused the group list {groups}")
    except (OSError, AttributeError) as exc:
        log.warning("tls_groups_not_restricted", reason=str(exc), openssl=ssl.OPENSSL_VERSION)
        return False
    return True
