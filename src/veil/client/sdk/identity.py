"""This device's standing in its own account: primary, linked or waiting for approval.

The first device of a user makes the user's master key, publishes its public half and certifies
itself: it is *primary* (it holds the private half and can approve other devices). Every later
device is *pending* until a primary device approves it: the user reads the new device's link code
(or scans its QR) on the primary one, which checks that code against the keys the server lists,
certifies the device and sends it, over an end-to-end encrypted session, the master public key (and
the private half, if the user makes it primary too). A linked device learns its own user's master
key only that way, never from the server. A user who lost every primary device resets the master
key with the password; contacts are warned (`identity_changed`), as after a Signal re-install.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

import httpx

from veil.client.protocol.codec import b64encode, canonical_uuid
from veil.client.protocol.errors import MalformedMessageError
from veil.client.protocol.identity import (
    LINK_PAYLOAD_LABEL,
    LinkPayload,
    MasterKey,
    decode_link_payload,
    encode_link_payload,
    link_code,
    link_digest_matches,
    link_proof,
    parse_link_code,
    verify_certificate,
)
from veil.client.protocol.keys import DeviceKeys
from veil.client.protocol.trust import ListedDevice, TrustStore
from veil.client.sdk.directory import Directory
from veil.client.sdk.models import DeviceNotApprovedError, TrustError, VeilError

Call = Callable[..., httpx.Response]
SendPayload = Callable[[ListedDevice, bytes], None]


def is_link_payload(plaintext: bytes) -> bool:
    """Whether a `session_message` plaintext is a link payload (it starts with its label field)."""
    return plaintext[4 : 4 + len(LINK_PAYLOAD_LABEL)] == LINK_PAYLOAD_LABEL


class DeviceIdentity:
    """The master key and this device's certificate, and the approval of new devices."""

    def __init__(
        self,
        call: Call,
        directory: Directory,
        user_id: str,
        device_id: str,
        keys: DeviceKeys,
        link_secret: bytes,
        certificate: bytes | None = None,
    ) -> None:
        self._call = call
        self._directory = directory
        self._user_id = user_id
        self._device_id = device_id
        self._keys = keys
        self._link_secret = link_secret
        self.certificate = certificate

    @property
    def trust(self) -> TrustStore:
        return self._directory.trust

    @property
    def role(self) -> str:
        """`primary` (holds the master key), `linked` (approved) or `pending` (waits for approval)."""
        if self.certificate is None:
            return "pending"
        return "primary" if self.trust.own_master is not None else "linked"

    def require_approved(self) -> None:
        if self.certificate is None:
            raise DeviceNotApprovedError(
                "This device is not approved yet, so it holds no key it could trust for your own "
                f"account. On a device you already use, run `veil-client devices approve {self.link_code()}`."
            )

    # After a login ------------------------------------------------------------------------------

    def set_up(self, save: Callable[[], None]) -> None:
        """Make the user's master key if the account has none (this device becomes primary), or
        certify this device at once when this key store already holds the account's master key (a
        primary device signing in again); otherwise the device stays pending.

        A new master key is saved (`save`) before its public half is published, so the account
        never publishes a key whose private half could be lost; if another device published one
        first (409), the unpublished key is forgotten and this device stays pending."""
        published = self._directory.server_identity(self._user_id)
        master = self.trust.own_master
        if published is None:
            if master is None:  # else: made by an earlier attempt that never got to publish it
                master = MasterKey.generate()
                self.trust.forget_own_master()
                self.trust.install_own_master(master.public_key, master)
                save()
            try:
                self._call(
                    "PUT",
                    "/v1/identity",
                    json={"master_key": b64encode(master.public_key)},
                    expect=(200, 201),
                )
            except VeilError as error:
                if error.status != 409:
                    raise
                self.trust.forget_own_master()
                save()
                return
        elif master is None or master.public_key != published:
            return
        self._certify_self()

    def _certify_self(self) -> None:
        listed = ListedDevice(self._device_id, self._keys.identity_key, self._keys.signing_key, None)
        self.certificate = self._directory.certify(listed)

    # Approving a new device --------------------------------------------------------------------

    def link_code(self) -> str:
        """What the user reads from (or scans on) this device to approve it elsewhere."""
        return link_code(
            self._device_id, self._keys.identity_key, self._keys.signing_key, secret=self._link_secret
        )

    def approve(self, code: str, send: SendPayload, *, primary: bool = False) -> str:
        """Certify the own device that `code` names and send it the master key (its private half
        only with `primary`); returns its device id."""
        if self.trust.own_master is None:
            raise TrustError(
                "Only a device that holds your master key can approve devices: run this on your first "
                "device, or one approved with --primary."
            )
        try:
            device_id, digest, secret = parse_link_code(code)
        except ValueError as error:
            raise TrustError(f"That is not a device link code: {error}") from None
        device = next((d for d in self._directory.listing(self._user_id) if d.device_id == device_id), None)
        if device is None:
            raise TrustError(
                "None of your devices has that code's id: check the code, and that the device is signed in."
            )
        if not link_digest_matches(digest, device.identity_key, device.signing_key):
            raise TrustError(
                "The keys the server lists for that device are not the ones its code shows: it was not "
                "approved. Someone may be trying to slip a device of theirs into your account."
            )
        certificate = self._directory.certify(device)
        certified = ListedDevice(device.device_id, device.identity_key, device.signing_key, certificate)
        master = self.trust.own_master
        payload = LinkPayload(
            master.public_key,
            master.private_bytes() if primary else None,
            link_proof(secret, device_id, master.public_key),
        )
        send(certified, encode_link_payload(payload))
        return device_id

    def accept_link(self, sender_id: str, sender_device_id: str, plaintext: bytes) -> bool:
        """Take a link payload from another device of the own user; True if this device is now
        linked. Refused (False, with the reason raised as `TrustError`) unless the sender is the own
        user, the sender device is certified by the payload's master key, that key is the one the
        server publishes for the account, and this device is certified by it too."""
        if canonical_uuid(sender_id) != self._user_id:
            raise TrustError("A device of another user sent a device-link message: ignored.")
        try:
            payload = decode_link_payload(plaintext)
        except MalformedMessageError as error:
            raise TrustError(f"A malformed device-link message was ignored ({error}).") from None
        master = payload.master_public_key
        if not hmac.compare_digest(payload.proof, link_proof(self._link_secret, self._device_id, master)):
            raise TrustError(
                "A device-link message that does not answer this device's link code was ignored: only "
                "a device that read the code on this screen can link it."
            )
        if self._directory.server_identity(self._user_id) != master:
            raise TrustError(
                "A device-link message names a master key the account does not publish: ignored."
            )
        devices = {d.device_id: d for d in self._directory.listing(self._user_id)}
        sender = devices.get(canonical_uuid(sender_device_id))
        mine = devices.get(self._device_id)
        if (
            sender is None
            or mine is None
            or not all(
                d.certificate is not None
                and verify_certificate(
                    master, self._user_id, d.device_id, d.identity_key, d.signing_key, d.certificate
                )
                for d in (sender, mine)
            )
        ):
            raise TrustError(
                "A device-link message came from, or for, a device the master key never certified."
            )
        if mine.identity_key != self._keys.identity_key or mine.signing_key != self._keys.signing_key:
            raise TrustError("The server lists other keys for this device than it holds: link refused.")
        private = (
            None
            if payload.master_private_key is None
            else MasterKey.from_private_bytes(payload.master_private_key)
        )
        own = self.trust.own_master_public_key
        if own is not None and own != master:
            # The user reset the master key on another device and approved this one again: the
            # proof shows this device's code was read there, so the new key replaces the old.
            self.trust.observe(self._user_id, master)
            self.trust.accept(self._user_id, master)
        if self.trust.own_master_public_key is None or private is not None:
            self.trust.install_own_master(master, private)
        self.certificate = mine.certificate
        return True

    # Losing every device -----------------------------------------------------------------------

    def reset(self, password: str) -> None:
        """Replace the master key after every device holding it is lost: all device certificates
        are dropped, contacts see `identity_changed`, and this device becomes primary."""
        master = MasterKey.generate()
        self._call(
            "POST",
            "/v1/identity/reset",
            json={"password": password, "master_key": b64encode(master.public_key)},
            expect=(200,),
        )
        if self.trust.own_master_public_key is not None:
            self.trust.observe(self._user_id, master.public_key)
            self.trust.accept(self._user_id, master.public_key)
        self.trust.install_own_master(master.public_key, master)
        self._certify_self()
