"""Turning whatever went wrong into one sentence a person can act on.

`veil-client` never shows a traceback: every failure it expects (an API refusal, a network or TLS
problem, a key store that will not open, a message that will not decrypt, a file that cannot be
read) is explained here, and anything else is reported by its type only, because an unexpected
exception's text could carry a secret.
"""

from __future__ import annotations

import ssl

import httpx
from websockets.exceptions import InvalidStatus, WebSocketException

from veil.client.cli.profile import ProfileError
from veil.client.protocol.errors import (
    CryptoError,
    IdentityMismatchError,
    KeystoreError,
    KeystoreFormatError,
    WrongPassphraseError,
)
from veil.client.protocol.transparency import SplitViewError, TransparencyError
from veil.client.sdk.failure_messages import failure_sentence, reason_of
from veil.client.sdk.models import NotSignedInError, TrustError, VeilError
from veil.client.sdk.object_store import TransferError
from veil.client.sdk.tokens import SessionEndedError

SESSION_EXPIRED = "Your session has expired; run `veil-client login EMAIL` again."
SESSION_REVOKED = (
    "This device's session was ended (signed out elsewhere, or the server saw a reused refresh "
    "token): sign in again with `veil-client login`."
)
NOT_SIGNED_IN = "You are not signed in; run `veil-client login EMAIL` (or `register EMAIL`) first."


class UserError(Exception):
    """A failure already phrased for the user (no further explanation needed)."""


def explain(error: BaseException, *, url: str, keystore: str | None = None) -> str:
    """One line, no secrets: what failed and, where there is one, what to do about it."""
    if isinstance(error, UserError | ProfileError):
        return str(error)
    if isinstance(error, TrustError):  # its text is written for people and names no secret
        return " ".join(str(error).split()) or "This device does not trust that key or device."
    if isinstance(error, SessionEndedError):
        return SESSION_EXPIRED if error.expired else SESSION_REVOKED
    if isinstance(error, VeilError):
        return _api_refusal(error)
    if isinstance(error, NotSignedInError):
        return NOT_SIGNED_IN
    if isinstance(
        error, httpx.HTTPError | WebSocketException | ssl.SSLError | ConnectionError | TimeoutError
    ):
        return _network(error, url)
    if isinstance(error, WrongPassphraseError):
        where = f" at {keystore}" if keystore else ""
        return f"Wrong passphrase for the key store{where} (or the file was altered)."
    if isinstance(error, KeystoreFormatError):
        return f"The key store{f' at {keystore}' if keystore else ''} cannot be read: {error}."
    if isinstance(error, KeystoreError):
        return f"The key store cannot be used: {error}."
    if isinstance(error, IdentityMismatchError):
        return (
            "A contact's identity key changed since you first talked (a new device, or someone in the "
            "middle): compare safety numbers with `veil-client verify USER` before trusting it."
        )
    if isinstance(error, SplitViewError):  # written for people, with what to do
        return str(error)
    if isinstance(error, TransparencyError):  # names what did not verify
        return f"The key-transparency log does not back what the server says: {error}."
    if isinstance(error, CryptoError):
        return f"A message could not be used: {failure_sentence(reason_of(error))}."
    if isinstance(error, TransferError):
        return f"The file transfer failed: {error}."
    if isinstance(error, OSError):
        name = f" {error.filename}" if error.filename else ""
        return f"Cannot use{name}: {error.strerror or type(error).__name__}."
    return f"Unexpected failure ({type(error).__name__}); nothing was shown to protect secrets."


def _api_refusal(error: VeilError) -> str:
    detail = error.detail.rstrip(".") if error.detail else error.title
    if error.status == 401:
        return SESSION_EXPIRED
    if error.status == 429:
        wait = f"in {error.retry_after} seconds" if error.retry_after is not None else "in a moment"
        return f"The server is rate limiting you; try again {wait}."
    if error.status == 404 and "conversation" in detail.lower():
        return "You are not a member of that conversation (or it does not exist)."
    if error.status == 404:
        return f"Not found: {detail}."
    if error.status == 403:
        return f"Not allowed: {detail}."
    if error.status == 422:
        return f"The server refused the request: {str(error).split(': ', 1)[-1]}."
    if error.status >= 500:
        return f"The server failed ({error.status} {error.title}); try again later."
    return f"The server refused the request ({error.status} {error.title}): {detail}."


def _network(error: BaseException, url: str) -> str:
    if isinstance(error, InvalidStatus):
        status = error.response.status_code
        if status == 401:  # refused a current access token: the session was revoked
            return SESSION_REVOKED
        return f"The server at {url} refused the live connection (HTTP {status})."
    if _tls_verification_failed(error):
        return (
            f"TLS verification failed for {url}: its certificate is not signed by a CA you trust. "
            "For the development server pass --ca-file .data/tls/ca.pem (or set VEIL_CA_FILE)."
        )
    if isinstance(error, ssl.SSLError) or _caused_by(error, ssl.SSLError):
        return f"The TLS handshake with {url} failed; is it a Veil server speaking HTTPS?"
    if isinstance(error, httpx.TimeoutException | TimeoutError):
        return f"The server at {url} did not answer in time."
    if isinstance(error, httpx.ConnectError | ConnectionError):
        return f"Cannot reach a Veil server at {url}: is it running, and is the URL right (--url)?"
    return f"The connection to {url} failed ({type(error).__name__})."


def _caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _tls_verification_failed(error: BaseException) -> bool:
    return _caused_by(error, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(error)
