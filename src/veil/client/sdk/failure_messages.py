"""Why a message could not be read, in a sentence a person understands: the one place that turns
the cryptographic core's refusals (protocol/errors.py) into words.

Each refusal maps to a stable reason code (what `GroupMessage.failure` holds, and what scripts see
in `--json` output) and each code to one sentence, which names the sender where that helps. Every
`CryptoError` subclass has its own entry (a unit test fails when a new one has none), so no
exception name ever reaches the screen.
"""

from __future__ import annotations

from veil.client.protocol.errors import (
    CryptoError,
    DecryptionError,
    IdentityMismatchError,
    InvalidBundleError,
    InvalidMasterKeyError,
    MalformedMessageError,
    MembershipError,
    OwnMessageError,
    ReplayError,
    RetiredEpochError,
    SenderKeyRefusedError,
    TooManySkippedError,
    UnknownPrekeyError,
    UnknownSenderKeyError,
    UnknownSessionError,
)
from veil.client.protocol.transparency import SplitViewError, TransparencyError

# Reasons that do not come from a refusal of the core, but from what the client saw around it.
NOT_A_MEMBER = "not_a_member"
WRONG_CONVERSATION = "wrong_conversation"
METADATA_CHANGED = "metadata_changed"
OWN_NOT_KEPT = "own_not_kept"

REASON_OF: dict[type[CryptoError], str] = {
    CryptoError: "unreadable",
    InvalidBundleError: "bad_keys",
    IdentityMismatchError: "keys_changed",
    DecryptionError: "altered",
    MalformedMessageError: "malformed",
    ReplayError: "replayed",
    TooManySkippedError: "too_far_ahead",
    UnknownSessionError: "no_session",
    UnknownPrekeyError: "prekey_used",
    UnknownSenderKeyError: "waiting_for_key",
    RetiredEpochError: "too_late",
    OwnMessageError: OWN_NOT_KEPT,
    InvalidMasterKeyError: "bad_account_key",
    MembershipError: "membership_unverified",
    SenderKeyRefusedError: "key_refused",
    TransparencyError: "key_log_unproven",
    SplitViewError: "split_view",
}

_SENTENCES: dict[str, str] = {
    "unreadable": "this message could not be read",
    "bad_keys": "{sender}'s published keys are broken, so this message cannot be read",
    "keys_changed": "{sender}'s keys changed: compare safety numbers with them before trusting this",
    "altered": "this message was altered or is not for this conversation",
    "malformed": "this message is damaged, or was written by a client this one does not understand",
    "replayed": "this message was delivered before and is not shown twice",
    "too_far_ahead": "this message claims to come after too many messages from {sender} that never arrived",
    "no_session": "cannot read this message: this device has no secure session with {sender}",
    "prekey_used": "cannot read this message: it needs a one-time key this device no longer has",
    "waiting_for_key": "cannot read this message yet: waiting for {sender}'s new key",
    "too_late": (
        "this message came too late: the group's keys of that time were retired after its members changed"
    ),
    OWN_NOT_KEPT: "sent from this device, and its text was not kept here",
    "bad_account_key": "{sender}'s account key is unusable, so this message cannot be trusted",
    "membership_unverified": "the group's membership record does not check out, so this message is not shown",
    "key_refused": "{sender}'s group key was refused (made for other members, or too old)",
    "key_log_unproven": "{sender}'s keys are not proven by the key log, so this message is not trusted",
    "split_view": "the server is showing different keys to different people: this conversation is on hold",
    NOT_A_MEMBER: "sent while you were not a member of this group (before you joined, or after you left)",
    WRONG_CONVERSATION: "the server returned a message of another conversation here",
    METADATA_CHANGED: "this message was altered on the server after it was first read",
}


def reason_of(error: CryptoError) -> str:
    """The reason code of a refusal: its own class's, or the nearest base class's."""
    for cls in type(error).__mro__:
        if cls in REASON_OF:
            return REASON_OF[cls]
    return REASON_OF[CryptoError]


def failure_sentence(reason: str, sender: str = "the sender") -> str:
    """The sentence for a reason code, naming `sender` (how the reader knows them) where it helps."""
    return _SENTENCES.get(reason, _SENTENCES["unreadable"]).format(sender=sender)


def known_reasons() -> frozenset[str]:
    """Every reason code that has a sentence (what `--json` output may carry)."""
    return frozenset(_SENTENCES)
