"""Wire models of the Keys API. Keys travel as base64 of their raw bytes."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from veil.core.binary import Base64Bytes
from veil.core.wire import RequestModel, ResponseModel, Timestamp
from veil.keys.pq_prekeys import MAX_PQ_ONE_TIME_PREKEYS, PUBLIC_KEY_BYTES

KeyId = int
PublicKey = Annotated[bytes, Base64Bytes(32)]
# An ML-KEM-768 encapsulation key, raw (FIPS 203).
PqPublicKey = Annotated[bytes, Base64Bytes(PUBLIC_KEY_BYTES)]
Signature = Annotated[bytes, Base64Bytes(64)]
# The hard ceiling of one envelope's ciphertext; the configured limit (64 KiB) is a 413 below it.
Ciphertext = Annotated[bytes, Base64Bytes(1, 1024 * 1024)]
Nonce = Annotated[bytes, Base64Bytes(12, 24, only=(12, 24))]
AuthTag = Annotated[bytes, Base64Bytes(16)]

# What a device message carries (never the plaintext itself): session set-up, a message within
# a 1:1 device session, or a group sender key.
DeviceContentType = Literal["session_init", "session_message", "sender_key"]


class SignedPrekey(RequestModel):
    key_id: KeyId = Field(ge=0, le=2**32 - 1)
    public_key: PublicKey
    signature: Signature


class OneTimePrekey(RequestModel):
    key_id: KeyId = Field(ge=0, le=2**32 - 1)
    public_key: PublicKey


class PqPrekey(RequestModel):
    """An ML-KEM-768 prekey with the Ed25519 signature by the device's signing key over
    `veil/pq-prekey/v1` || key_id (u32 big-endian) || public_key."""

    key_id: KeyId = Field(ge=0, le=2**32 - 1)
    public_key: PqPublicKey
    signature: Signature


PqOneTimePrekeys = Annotated[list[PqPrekey], Field(max_length=MAX_PQ_ONE_TIME_PREKEYS)]


class PublishKeys(RequestModel):
    identity_key: PublicKey
    signing_key: PublicKey
    signed_prekey: SignedPrekey
    one_time_prekeys: list[OneTimePrekey] = Field(default_factory=list, max_length=200)
    # Replaces the device's last-resort PQ prekey; absent (or null) keeps the current one.
    pq_last_resort_prekey: PqPrekey | None = None
    pq_one_time_prekeys: PqOneTimePrekeys = Field(default_factory=list)


def _at_least_one_list(schema: dict[str, Any]) -> None:
    schema["anyOf"] = [
        {"required": [name], "properties": {name: {"minItems": 1}}}
        for name in ("one_time_prekeys", "pq_one_time_prekeys")
    ]


class AddOneTimePrekeys(RequestModel):
    """One-time prekeys to add: classical, post-quantum or both; at least one list non-empty."""

    model_config = ConfigDict(json_schema_extra=_at_least_one_list)

    one_time_prekeys: list[OneTimePrekey] = Field(default_factory=list, max_length=200)
    pq_one_time_prekeys: PqOneTimePrekeys = Field(default_factory=list)

    @model_validator(mode="after")
    def _not_empty(self) -> AddOneTimePrekeys:
        if not self.one_time_prekeys and not self.pq_one_time_prekeys:
            raise ValueError("Give at least one one-time prekey (one_time_prekeys or pq_one_time_prekeys).")
        return self


class PrekeyCount(ResponseModel):
    # Unclaimed classical one-time prekeys of the device.
    count: int
    # Unclaimed one-time PQ prekeys of the device.
    pq_count: int


class RemainingPrekeys(ResponseModel):
    one_time_prekeys: int
    pq_one_time_prekeys: int


class SignedPrekeyView(ResponseModel):
    key_id: int
    public_key: PublicKey
    signature: Signature


class OneTimePrekeyView(ResponseModel):
    key_id: int
    public_key: PublicKey


class PqPrekeyView(ResponseModel):
    key_id: int
    public_key: PqPublicKey
    signature: Signature
    # True for the device's last-resort key (reused until replaced), false for a one-time key.
    last_resort: bool


class CertificateView(ResponseModel):
    """The master key's Ed25519 signature over `veil/device-certificate/v1` || user_id (16 raw
    bytes) || device_id (16) || identity_key (32) || signing_key (32)."""

    signature: Signature


class DeviceView(ResponseModel):
    device_id: uuid.UUID
    identity_key: PublicKey
    signing_key: PublicKey
    signed_prekey: SignedPrekeyView
    # Null for a device that no device of its user has approved (certified) yet.
    certificate: CertificateView | None


class DeviceList(ResponseModel):
    # Null before the user has set one.
    master_key: PublicKey | None
    items: list[DeviceView]


class ClaimedBundle(ResponseModel):
    device_id: uuid.UUID
    identity_key: PublicKey
    signing_key: PublicKey
    signed_prekey: SignedPrekeyView
    certificate: CertificateView | None
    one_time_prekey: OneTimePrekeyView | None
    # A one-time PQ prekey while any is left and the hourly budget lasts, else the last-resort
    # one; null for a device that never published one.
    pq_prekey: PqPrekeyView | None


class SetMasterKey(RequestModel):
    # An Ed25519 public key, raw (32 bytes).
    master_key: PublicKey


class ResetMasterKey(RequestModel):
    password: str = Field(max_length=1024)
    master_key: PublicKey


class IdentityView(ResponseModel):
    user_id: uuid.UUID
    master_key: PublicKey
    changed_at: Timestamp


class CertifyDevice(RequestModel):
    signature: Signature


class OutgoingDeviceMessage(RequestModel):
    device_id: uuid.UUID
    ciphertext: Ciphertext
    nonce: Nonce
    auth_tag: AuthTag


class SendDeviceMessages(RequestModel):
    content_type: DeviceContentType
    messages: list[OutgoingDeviceMessage] = Field(min_length=1, max_length=100)


class Accepted(ResponseModel):
    queued: int


DeviceMessageId = Annotated[int, Field(ge=1, le=2**63 - 1)]


def _one_of_two(schema: dict[str, Any]) -> None:
    # The defaults below only stand for "not given"; exactly one member must be.
    for member in schema["properties"].values():
        member.pop("default", None)
    schema["oneOf"] = [{"required": ["up_to_id"]}, {"required": ["ids"]}]


class AcknowledgeDeviceMessages(RequestModel):
    """Exactly one of `up_to_id` (every envelope of the caller's queue up to that id) or `ids`."""

    model_config = ConfigDict(json_schema_extra=_one_of_two)

    up_to_id: DeviceMessageId = 0
    ids: list[DeviceMessageId] = Field(default_factory=list, min_length=1, max_length=500)

    @model_validator(mode="after")
    def _exactly_one(self) -> AcknowledgeDeviceMessages:
        if len(self.model_fields_set) != 1:
            raise ValueError("Give exactly one of up_to_id and ids.")
        return self


class DeviceMessageView(ResponseModel):
    id: int
    sender_id: uuid.UUID
    sender_device_id: uuid.UUID
    content_type: str
    ciphertext: Ciphertext
    nonce: Nonce
    auth_tag: AuthTag
    created_at: Timestamp


class Gap(ResponseModel):
    dropped: int
    since: Timestamp


class DeviceMessageList(ResponseModel):
    items: list[DeviceMessageView]
    gap: Gap | None
    next_cursor: str | None
