"""Exceptions of the client's cryptographic core.

One base class per concern so that a caller can tell "drop this message" (`DecryptionError` and its
subclasses) from "I need more state first" (`UnknownSessionError`, `UnknownSenderKeyError`) from
"the local store is unusable" (`KeystoreError`).
"""

from __future__ import annotations


class CryptoError(Exception):
    """Base class for every refusal of the cryptographic core."""


class InvalidBundleError(CryptoError):
    """A peer's published keys are malformed or their signed prekey signature does not verify."""


class IdentityMismatchError(CryptoError):
    """A peer's identity key differs from the one the caller expected (possible substitution)."""


class DecryptionError(CryptoError):
    """A message cannot be opened: forged, altered, moved to other metadata, or meant for someone else."""


class MalformedMessageError(DecryptionError):
    """A message's framing (version, type, lengths) is not one this client understands."""


class ReplayError(DecryptionError):
    """A message whose key was already used and deleted: it was delivered before."""


class TooManySkippedError(DecryptionError):
    """A message claims to be further ahead in its chain than the skipped-key bound allows."""


class UnknownSessionError(CryptoError):
    """No pairwise session exists for this peer device or session id."""


class UnknownPrekeyError(CryptoError):
    """A session set-up names a prekey this device does not hold (already used, or never issued)."""


class UnknownSenderKeyError(CryptoError):
    """No sender key is known for this conversation, epoch and sender device."""


class RetiredEpochError(UnknownSenderKeyError):
    """A group message of an epoch whose keys were deleted when its grace period after a
    membership change ended: it came too late to be read."""


class OwnMessageError(CryptoError):
    """A group message sent by this very device: its key was deleted when it was sent."""


class KeystoreError(Exception):
    """The local keystore file cannot be read or written."""


class KeystoreFormatError(KeystoreError):
    """The keystore file is not a Veil keystore, is truncated, or uses unsupported parameters."""


class WrongPassphraseError(KeystoreError):
    """The passphrase does not open the keystore (or the file was altered since it was written)."""


class InvalidMasterKeyError(CryptoError):
    """A master key is not a usable Ed25519 public key: wrong size, small order, or non-canonical."""


class MembershipError(CryptoError):
    """A conversation's membership history breaks a rule or a commit fails: trust no roster from it."""


class SenderKeyRefusedError(CryptoError):
    """A received sender key is not installed: bound to another roster than ours, or for a retired epoch."""
