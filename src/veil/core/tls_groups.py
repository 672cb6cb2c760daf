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
  (Modules/_ssl.c: `typedef struct { PyObject_HEAD SSL_CTX *ctx; ... } PySSLContext;`, the same
  from 3.6 to 3.13; uvloop and others rely on it too), so it sits at
  `id(context) + object.__basicsize__`.
- Symbols are looked up through the `_ssl` extension's own handle, so they are those of the very
  libssl that built the context, never another copy installed on the system.
- Before writing anything the pointer is checked: OpenSSL's `SSL_CTX_get_options` on it must
  equal what Python reports as `context.options`. If that does not hold (a statically linked
  OpenSSL, say), the defaults stay and a warning is logged; the tests of `make test` connect with
  each group and fail if the list is not in force.

The risk, and how it is contained: the offset is CPython's private layout, read through raw
memory. Reading the pointer itself stays inside the object, but if the layout were different the
value would be something else, and the check above hands it to OpenSSL, which dereferences it: a
crash of the whole server process, not an exception. So the ctypes path only runs where the layout
was read in the source and is exercised by the tests: CPython 3.11, 3.12 and 3.13
(VERIFIED_PYTHONS), with the GIL (the free-threaded build has another object header), on an
instance of `_ssl._SSLContext`. Anywhere else (a new CPython, PyPy) nothing is read: the server
keeps OpenSSL's default groups and logs `tls_groups_not_restricted`; the deployment's nginx
gateway (`ssl_ecdh_curve`) is unaffected. Supporting a new CPython means reading its
Modules/_ssl.c, adding it to VERIFIED_PYTHONS and running tests/unit/test_tls_groups.py on it.

Rejected: an OpenSSL configuration file (`OPENSSL_CONF` with `Groups = X25519:P-256:P-384` in a
`system_default` section), even set for the server process alone. It has to be in the environment
before OpenSSL initialises (a re-exec of the process), replaces the system's configuration, and
applies to every context the process makes: the server process is also a TLS client of
PostgreSQL, S3 and SMTP, where the server has no business choosing. OpenSSL can apply a named
section to one context only (`SSL_CTX_config`), but Python does not expose that call either, so it
would take the same pointer. Python's own `SSLContext` gains a group setter only after 3.13.
"""

from __future__ import annotations

import ctypes
import ssl
import sys
import sysconfig

from veil.core.logging import get_logger

log = get_logger(__name__)

# OpenSSL's names: P-256 is prime256v1, P-384 secp384r1.
INTERMEDIATE_GROUPS = "X25519:P-256:P-384"
_SSL_CTRL_SET_GROUPS_LIST = 92

# CPython versions whose PySSLContext starts with the SSL_CTX pointer (Modules/_ssl.c read for
# each); only there is the pointer read at all.
VERIFIED_PYTHONS = frozenset({(3, 11), (3, 12), (3, 13)})


def _unverified_layout(context: ssl.SSLContext) -> str | None:
    """Why the object layout of `context` cannot be trusted here, or None when it can."""
    import _ssl

    if sys.implementation.name != "cpython":
        return f"{sys.implementation.name} is not CPython"
    if sys.version_info[:2] not in VERIFIED_PYTHONS:
        return f"CPython {sys.version_info[0]}.{sys.version_info[1]} is not a verified layout"
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        return "the free-threaded build has another object header"
    if not isinstance(context, _ssl._SSLContext):
        return "not an ssl.SSLContext"
    return None


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
    if (unverified := _unverified_layout(context)) is not None:
        log.warning("tls_groups_not_restricted", reason=unverified, openssl=ssl.OPENSSL_VERSION)
        return False
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
