"""The Double Ratchet of a pairwise session: the `doubleratchet` package with Veil's parameters.

Signal's Double Ratchet (rev. 4) over X25519, started from the X3DH secret SK as the first root key:

    root step    RK' | CK = HKDF-SHA256(salt = RK, ikm = DH(own ratchet key, peer ratchet key),
                                        info = "veil/double-ratchet/root/v2", 64 bytes)
    chain step   CK' = HMAC-SHA256(CK, 0x02)      MK = HMAC-SHA256(CK, 0x01)
    message      ChaCha20-Poly1305(key = MK, nonce = 12 random bytes,
                                   plaintext, AD || length_prefixed(ratchet header))

The nonce travels in the envelope's `nonce` field. It is random rather than derived from MK because
one MK can encrypt twice: a device that restores an older keystore (a backup) reuses chain indices,
and a derived nonce would then encrypt two plaintexts under the same key and nonce (a two-time pad).

Healing (post-compromise security), for a thief who copied this state and then only watches: a
side makes a fresh ratchet key whenever it receives a message under a peer ratchet key it has not
stepped to yet, and the root key then absorbs a DH output the thief cannot compute. So once this
side has received such a message after the copy, the replies it sends from then on are unreadable
to the thief, and so is everything the peer sends after receiving one of them. Until then the
thief reads both directions. A thief who actively impersonates a side with the stolen state is not
healed against.

Out of order: keys of skipped messages are kept, at most `MAX_SKIPPED_KEYS` in all (the oldest
dropped), each for at most `SKIPPED_MAX_AGE` seconds after it was skipped. A message may be at
most `MAX_SKIP` ahead in its own chain (`TooManySkippedError` otherwise). A message that starts a
new peer chain also derives the unread rest of the previous chain, if that is at most `MAX_SKIP`
keys; a longer rest is given up (those messages stay unreadable) so that heavy loss never blocks
the session. One message thus derives at most twice `MAX_SKIP` keys, and the store keeps the
newest `MAX_SKIPPED_KEYS` of them.

A second delivery finds no key: `ReplayError`. A message that does not authenticate changes no
ratchet state. The library's coroutines do no I/O and are driven synchronously (`run_sync`),
never with an event loop: the SDK calls this core from inside one.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Coroutine, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import doubleratchet
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from doubleratchet.models import SkippedMessageKeyModel
from doubleratchet.recommended import (
    HashFunction,
    diffie_hellman_ratchet_curve25519,
    kdf_hkdf,
    kdf_separate_hmacs,
)

from veil.client.protocol.codec import (
    U32_MAX,
    b64decode,
    b64encode,
    length_prefixed,
    read_bytes,
    read_int,
    read_list,
    read_mapping,
    read_optional_time,
)
from veil.client.protocol.envelope import NONCE_SIZE, TAG_SIZE
from veil.client.protocol.errors import DecryptionError, ReplayError, TooManySkippedError
from veil.client.protocol.framing import RatchetHeader
from veil.client.protocol.keys import KEY_SIZE
from veil.client.protocol.ratchet import MAX_SKIP, MAX_SKIPPED_KEYS, SKIPPED_MAX_AGE, step

# How many earlier peer ratchet keys are remembered, to refuse old-chain replays outright.
EARLIER_PEER_KEYS_KEPT = 20

ROOT_INFO = b"veil/double-ratchet/root/v2"
CHAIN_CONSTANT = b"\x02\x01"  # next CK = HMAC(CK, 0x02) first, then MK = HMAC(CK, 0x01)

T = TypeVar("T")
_SkippedId = tuple[bytes, int]


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (the library's are pure computation) to its result."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coroutine.close()
    raise RuntimeError("the Double Ratchet suspended: not allowed in the protocol core")


class X25519Ratchet(diffie_hellman_ratchet_curve25519.DiffieHellmanRatchet):
    """X25519 ratchet keys; a low-order peer key is a forgery, not a crash."""

    @staticmethod
    def _perform_diffie_hellman(own_priv: bytes, other_pub: bytes) -> bytes:
        try:
            return diffie_hellman_ratchet_curve25519.DiffieHellmanRatchet._perform_diffie_hellman(
                own_priv, other_pub
            )
        except ValueError:
            # OpenSSL refuses the all-zero output of a low-order point: never a real peer.
            raise DecryptionError("degenerate X25519 ratchet key") from None


class RootKDF(kdf_hkdf.KDF):
    """HKDF-SHA256 with the root key as salt and the DH output as input key material."""

    @staticmethod
    def _get_hash_function() -> HashFunction:
        return HashFunction.SHA_256

    @staticmethod
    def _get_info() -> bytes:
        return ROOT_INFO


class ChainKDF(kdf_separate_hmacs.KDF):
    """One HMAC-SHA256 of the chain key per constant byte (Signal's chain step)."""

    @staticmethod
    def _get_hash_function() -> HashFunction:
        return HashFunction.SHA_256


class MessageAEAD(doubleratchet.AEAD):
    """ChaCha20-Poly1305 with the message key as key and a random nonce; the output is
    `nonce || ciphertext || tag`, so the envelope's `nonce` field reaches `decrypt` with the rest."""

    @staticmethod
    def _generate_nonce() -> bytes:
        """A fresh nonce per message; a subclass may fix it for known-answer vectors only."""
        return os.urandom(NONCE_SIZE)

    # A classmethod (the library declares a staticmethod and calls it on the class, so the call is
    # the same) so that a subclass's `_generate_nonce` is the one used, as `_generate_priv` is.
    @classmethod
    async def encrypt(cls, plaintext: bytes, key: bytes, associated_data: bytes) -> bytes:
        nonce = cls._generate_nonce()
        return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated_data)

    @staticmethod
    async def decrypt(ciphertext: bytes, key: bytes, associated_data: bytes) -> bytes:
        if len(ciphertext) < NONCE_SIZE + TAG_SIZE:
            raise doubleratchet.AuthenticationFailedException("too short for a nonce and a tag")
        nonce, sealed = ciphertext[:NONCE_SIZE], ciphertext[NONCE_SIZE:]
        try:
            return ChaCha20Poly1305(key).decrypt(nonce, sealed, associated_data)
        except InvalidTag:
            raise doubleratchet.AuthenticationFailedException("authentication failed") from None


def root_step(root_key: bytes, dh_output: bytes) -> tuple[bytes, bytes]:
    """One root-chain step: `(next root key, new chain key)`, exactly as the ratchet computes it."""
    output = run_sync(RootKDF.derive(root_key, dh_output, 64))
    return output[:32], output[32:]


def chain_step(chain_key: bytes) -> tuple[bytes, bytes]:
    """One message-chain step: `(message key, next chain key)`. The sender keys' hash ratchet step,
    which `ChainKDF` with `CHAIN_CONSTANT` computes too (a unit test holds them equal)."""
    return step(chain_key)


def _to_header(header: doubleratchet.Header) -> RatchetHeader:
    return RatchetHeader(
        header.ratchet_pub, header.previous_sending_chain_length, header.sending_chain_length
    )


def _from_header(header: RatchetHeader) -> doubleratchet.Header:
    return doubleratchet.Header(header.ratchet_key, header.previous_chain_length, header.index)


class _Ratchet(doubleratchet.DoubleRatchet):
    @staticmethod
    def _build_associated_data(associated_data: bytes, header: doubleratchet.Header) -> bytes:
        return associated_data + length_prefixed(_to_header(header).encode())


def _parameters(dh: type[X25519Ratchet], aead: type[MessageAEAD]) -> dict[str, Any]:
    return {
        "diffie_hellman_ratchet_class": dh,
        "root_chain_kdf": RootKDF,
        "message_chain_kdf": ChainKDF,
        "message_chain_constant": CHAIN_CONSTANT,
        "dos_protection_threshold": MAX_SKIP,
        "max_num_skipped_message_keys": MAX_SKIPPED_KEYS,
        "aead": aead,
    }


@contextmanager
def _library_errors() -> Iterator[None]:
    """Turn the library's exceptions into ours."""
    try:
        yield
    except (doubleratchet.AuthenticationFailedException, doubleratchet.DecryptionFailedException):
        raise DecryptionError("authentication failed") from None
    except doubleratchet.DoSProtectionException:
        raise TooManySkippedError(f"the message is more than {MAX_SKIP} ahead in its chain") from None
    except doubleratchet.DuplicateMessageException:
        raise ReplayError("the message was already received (or its skipped key was dropped)") from None


@contextmanager
def _quiet_if(heavy_loss: bool) -> Iterator[None]:
    """Keep the library's heavy-loss warning from users: giving up the old chain's rest is the
    documented bound at work. Only on that rare path, as `catch_warnings` is process-wide."""
    if not heavy_loss:
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"More than \d+ message keys skipped")
        yield


@dataclass(frozen=True)
class RatchetMessage:
    """One encrypted message: its ratchet header, its nonce, and ciphertext with tag."""

    header: RatchetHeader
    nonce: bytes
    ciphertext: bytes

    @property
    def _library_message(self) -> doubleratchet.EncryptedMessage:
        return doubleratchet.EncryptedMessage(_from_header(self.header), self.nonce + self.ciphertext)

    @classmethod
    def _from_library(cls, message: doubleratchet.EncryptedMessage) -> RatchetMessage:
        return cls(
            _to_header(message.header), message.ciphertext[:NONCE_SIZE], message.ciphertext[NONCE_SIZE:]
        )


class SessionRatchet:
    """One pairwise session's Double Ratchet, with what the library does not track itself: when each
    skipped key was skipped (for expiry) and the peer's earlier ratchet keys (to refuse replays)."""

    def __init__(
        self,
        ratchet: _Ratchet,
        peer_ratchet_key: bytes,
        *,
        skipped_at: dict[_SkippedId, float | None] | None = None,
        earlier_peer_keys: list[bytes] | None = None,
        dh: type[X25519Ratchet] = X25519Ratchet,
        aead: type[MessageAEAD] = MessageAEAD,
    ) -> None:
        self._ratchet = ratchet
        self._peer_ratchet_key = peer_ratchet_key
        # In the library's order (oldest first); always the same ids as the library holds.
        self._skipped_at = skipped_at or {}
        self._earlier_peer_keys = earlier_peer_keys or []
        self._dh = dh
        self._aead = aead

    @classmethod
    def initiate(
        cls,
        shared_secret: bytes,
        peer_ratchet_key: bytes,
        plaintext: bytes,
        associated_data: bytes,
        *,
        dh: type[X25519Ratchet] = X25519Ratchet,
        aead: type[MessageAEAD] = MessageAEAD,
    ) -> tuple[SessionRatchet, RatchetMessage]:
        """Start as the initiator (`peer_ratchet_key` is the responder's signed prekey) with a first message.

        `dh` and `aead` are for known-answer vectors only (subclasses with fixed `_generate_priv`
        and `_generate_nonce`).
        """
        with _library_errors():
            ratchet, message = run_sync(
                _Ratchet.encrypt_initial_message(
                    shared_secret=shared_secret,
                    recipient_ratchet_pub=peer_ratchet_key,
                    message=plaintext,
                    associated_data=associated_data,
                    **_parameters(dh, aead),
                )
            )
        return cls(ratchet, peer_ratchet_key, dh=dh, aead=aead), RatchetMessage._from_library(message)

    @classmethod
    def accept(
        cls,
        shared_secret: bytes,
        own_ratchet_private: bytes,
        message: RatchetMessage,
        associated_data: bytes,
        *,
        now: float | None = None,
        dh: type[X25519Ratchet] = X25519Ratchet,
        aead: type[MessageAEAD] = MessageAEAD,
    ) -> tuple[SessionRatchet, bytes]:
        """Start as the responder (`own_ratchet_private` is the signed prekey's) from the first message."""
        with _library_errors():
            ratchet, plaintext = run_sync(
                _Ratchet.decrypt_initial_message(
                    shared_secret=shared_secret,
                    own_ratchet_priv=own_ratchet_private,
                    message=message._library_message,
                    associated_data=associated_data,
                    **_parameters(dh, aead),
                )
            )
        session = cls(ratchet, message.header.ratchet_key, dh=dh, aead=aead)
        session._record_skipped(now)
        return session, plaintext

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> RatchetMessage:
        """The next message of the sending chain (the chain moves past it for good)."""
        if self._ratchet.sending_chain_length > U32_MAX:
            raise OverflowError("sending chain exhausted: start a new session")
        with _library_errors():
            message = run_sync(self._ratchet.encrypt_message(plaintext, associated_data))
        return RatchetMessage._from_library(message)

    def decrypt(self, message: RatchetMessage, associated_data: bytes, *, now: float | None = None) -> bytes:
        """Open a message; on any failure the ratchet is unchanged.

        Skipped keys older than `SKIPPED_MAX_AGE` at `now` are dropped first (none if `now` is
        None; keys skipped at an unknown time start aging at the first known `now`).
        """
        if now is not None:
            self.expire(now)
        skipped_id = (message.header.ratchet_key, message.header.index)
        steps = message.header.ratchet_key != self._peer_ratchet_key and skipped_id not in self._skipped_at
        if skipped_id not in self._skipped_at:
            if message.header.ratchet_key in self._earlier_peer_keys:
                # Stepping back to an old chain would derive garbage keys: the message was
                # received already, or its skipped key was dropped.
                raise ReplayError("the message is from an earlier chain and its key is gone")
            if not steps and self._ratchet.receiving_chain_length is None:
                raise DecryptionError("the peer's signed prekey never sends messages")
        with _library_errors(), _quiet_if(steps and self._gives_up_old_chain(message.header)):
            plaintext = run_sync(self._ratchet.decrypt_message(message._library_message, associated_data))
        if steps:
            self._earlier_peer_keys.append(self._peer_ratchet_key)
            del self._earlier_peer_keys[:-EARLIER_PEER_KEYS_KEPT]
            self._peer_ratchet_key = message.header.ratchet_key
        self._record_skipped(now)
        return plaintext

    def _gives_up_old_chain(self, header: RatchetHeader) -> bool:
        """Whether a message starting a new peer chain leaves more than MAX_SKIP keys of the
        previous one underived (the library then skips them, with a warning)."""
        received = self._ratchet.receiving_chain_length
        return received is not None and header.previous_chain_length - received > MAX_SKIP

    def expire(self, now: float) -> None:
        """Drop skipped keys older than `SKIPPED_MAX_AGE`; keys skipped at an unknown time start aging now."""
        expired = set()
        for skipped_id, skipped_at in self._skipped_at.items():
            if skipped_at is None:
                self._skipped_at[skipped_id] = float(now)
            elif now - skipped_at >= SKIPPED_MAX_AGE:
                expired.add(skipped_id)
        if not expired:
            return
        model = self._ratchet.model
        model.skipped_message_keys = [
            key for key in model.skipped_message_keys if (key.ratchet_pub, key.index) not in expired
        ]
        self._ratchet = _Ratchet.from_model(model, **_parameters(self._dh, self._aead))
        self._skipped_at = {key: at for key, at in self._skipped_at.items() if key not in expired}

    def _record_skipped(self, now: float | None) -> None:
        """Mirror the library's skipped keys, stamping the new ones with `now`."""
        stamp = None if now is None else float(now)
        self._skipped_at = {
            (key.ratchet_pub, key.index): self._skipped_at.get((key.ratchet_pub, key.index), stamp)
            for key in self._ratchet.model.skipped_message_keys
        }

    def to_state(self) -> dict[str, Any]:
        model = self._ratchet.model
        dh = model.diffie_hellman_ratchet
        chains = dh.symmetric_key_ratchet
        return {
            "own_ratchet_private": b64encode(dh.own_ratchet_priv),
            "peer_ratchet_key": b64encode(dh.other_ratchet_pub),
            "root": _chain_state(dh.root_chain),
            "sending": None if chains.sending_chain is None else _chain_state(chains.sending_chain),
            "receiving": None if chains.receiving_chain is None else _chain_state(chains.receiving_chain),
            "previous_sending_length": chains.previous_sending_chain_length,
            "skipped": [
                {
                    "ratchet_key": b64encode(key.ratchet_pub),
                    "index": key.index,
                    "message_key": b64encode(key.message_key),
                    "skipped_at": self._skipped_at.get((key.ratchet_pub, key.index)),
                }
                for key in model.skipped_message_keys
            ],
            "earlier_peer_keys": [b64encode(key) for key in self._earlier_peer_keys],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> SessionRatchet:
        previous = state.get("previous_sending_length")
        if previous is not None:
            previous = read_int(state, "previous_sending_length", maximum=U32_MAX)
        skipped_keys: list[SkippedMessageKeyModel] = []
        skipped_at: dict[_SkippedId, float | None] = {}
        for item in read_list(state, "skipped"):
            if not isinstance(item, Mapping):
                raise ValueError("a skipped key entry must be an object")
            ratchet_key = read_bytes(item, "ratchet_key", size=KEY_SIZE)
            index = read_int(item, "index", maximum=U32_MAX)
            skipped_keys.append(
                SkippedMessageKeyModel(
                    ratchet_pub=ratchet_key, index=index, message_key=read_bytes(item, "message_key", size=32)
                )
            )
            skipped_at[(ratchet_key, index)] = read_optional_time(item, "skipped_at")
        if len(skipped_keys) > MAX_SKIPPED_KEYS:
            raise ValueError("too many skipped keys")
        peer_ratchet_key = read_bytes(state, "peer_ratchet_key", size=KEY_SIZE)
        model = doubleratchet.DoubleRatchetModel(
            diffie_hellman_ratchet=doubleratchet.DiffieHellmanRatchetModel(
                own_ratchet_priv=read_bytes(state, "own_ratchet_private", size=KEY_SIZE),
                other_ratchet_pub=peer_ratchet_key,
                root_chain=_read_chain(state, "root"),
                symmetric_key_ratchet=doubleratchet.SymmetricKeyRatchetModel(
                    receiving_chain=_read_optional_chain(state, "receiving"),
                    sending_chain=_read_chain(state, "sending"),
                    previous_sending_chain_length=previous,
                ),
            ),
            skipped_message_keys=skipped_keys,
        )
        earlier = [
            b64decode(key, size=KEY_SIZE, field="earlier_peer_keys")
            for key in read_list(state, "earlier_peer_keys")
        ]
        return cls(
            _Ratchet.from_model(model, **_parameters(X25519Ratchet, MessageAEAD)),
            peer_ratchet_key,
            skipped_at=skipped_at,
            earlier_peer_keys=earlier[-EARLIER_PEER_KEYS_KEPT:],
        )


def _chain_state(chain: doubleratchet.KDFChainModel) -> dict[str, Any]:
    return {"key": b64encode(chain.key), "length": chain.length}


def _read_chain(state: Mapping[str, Any], key: str) -> doubleratchet.KDFChainModel:
    chain = read_mapping(state, key)
    return doubleratchet.KDFChainModel(
        key=read_bytes(chain, "key", size=32), length=read_int(chain, "length")
    )


def _read_optional_chain(state: Mapping[str, Any], key: str) -> doubleratchet.KDFChainModel | None:
    if key not in state:
        raise ValueError(f"{key} is required")
    return None if state[key] is None else _read_chain(state, key)
