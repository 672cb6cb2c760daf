"""Running an ASGI app under uvicorn with Veil's TLS policy and graceful shutdown.

TLS: 1.3 preferred, 1.2 the minimum, and for 1.2 only forward-secret AEAD suites (Mozilla
"intermediate"), key exchange over X25519, P-256 or P-384 only; no renegotiation, no compression.
SIGTERM/SIGINT: uvicorn stops accepting, waits up to `shutdown_timeout_seconds` for in-flight
requests, then runs the lifespan shutdown, which closes the pools; the process exits 0.
"""

from __future__ import annotations

import signal
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import FrameType

import uvicorn
from starlette.types import ASGIApp

from veil.core.config import Settings
from veil.core.tls_groups import restrict_groups

# Mozilla "intermediate" TLS 1.2 suites: ECDHE key exchange with AEAD ciphers only.
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)


def server_tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.load_cert_chain(cert_file, key_file)
    restrict_groups(context)  # X25519, P-256, P-384 only (see veil.core.tls_groups)
    return context


def run(
    app: ASGIApp,
    settings: Settings,
    *,
    cert_file: Path | None,
    key_file: Path | None,
    sockets: list[socket.socket] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM. Plain HTTP when no certificate is given (behind the gateway).
    On `sockets` if given (a worker's, veil.workers), else on the configured host and port."""
    factory: Callable[[uvicorn.Config, Callable[[], ssl.SSLContext]], ssl.SSLContext] | None = None
    if cert_file is not None and key_file is not None:
        context = server_tls_context(cert_file, key_file)

        def factory(_: uvicorn.Config, __: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
            return context

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ssl_context_factory=factory,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        lifespan="on",
        access_log=False,
        log_config=None,  # logging is configured by veil.core.logging
        proxy_headers=False,  # client addresses are resolved by RequestContext (trusted proxies)
        server_header=False,
        date_header=True,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_seconds),
        timeout_keep_alive=30,
        ws_max_size=128 * 1024,
        # Frames carry ciphertext, which does not compress: permessage-deflate only cost CPU (an
        # eighth of a worker's time delivering to groups) and a zlib context per socket.
        ws_per_message_deflate=False,
    )
    # uvicorn re-raises the signal that stopped it once it has shut down, through whatever handler
    # was installed before; a no-op handler turns a drained, clean shutdown into exit status 0.
    previous = {sig: signal.signal(sig, _drained) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        DrainingServer(config, getattr(getattr(app, "state", None), "drain_hooks", [])).run(sockets)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class DrainingServer(uvicorn.Server):
    """uvicorn cuts WebSockets with 1012 when it shuts down; the app's drain hooks run first, so
    sockets finish their in-flight sends and close with 1001 (going away)."""

    def __init__(self, config: uvicorn.Config, drain_hooks: list[Callable[[], Awaitable[None]]]) -> None:
        super().__init__(config)
        self._drain_hooks = drain_hooks

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for hook in self._drain_hooks:
            await hook()
        await super().shutdown(sockets)


def _drained(signum: int, frame: FrameType | None) -> None:
    """The server has already shut down gracefully; nothing is left to do."""
