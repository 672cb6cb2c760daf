"""Users' master keys and devices, as far as this device trusts them.

The server publishes every user's master key and device list, and it could lie about both. This
module asks it, then believes only what the trust store allows: a user's master key is pinned the
first time it is seen (and compared by safety number if the users care to), and a device counts only
if that pinned key certified exactly the keys the listing shows. Everything else is refused with a
warning that names the device, so that nothing is sent to a device its owner never approved.

A changed master key of a contact who was never verified is accepted with a warning, as Signal
does; a verified contact's change blocks sending to them until the user verifies again or accepts.

Nothing the server lists is believed before the key-transparency log proves it (`KeyLog`): the
master key and certified devices must be the user's latest leaf in the log, so the server cannot
show one person keys it does not show everyone (and the user's own devices).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from veil.client.protocol.codec import b64decode, b64encode, canonical_uuid
from veil.client.protocol.errors import CryptoError
from veil.client.protocol.keys import device_fingerprint
from veil.client.protocol.transparency import SplitViewError, TransparencyError
from veil.client.protocol.trust import ListedDevice, TrustState, TrustStore
from veil.client.sdk.key_log import KeyLog
from veil.client.sdk.models import IdentityChangedError, TrustError, VeilError

Call = Callable[..., httpx.Response]


@dataclass(frozen=True)
class DeviceStatus:
    """A device of some user and whether this device trusts it (`status` is for people)."""

    device_id: str
    fingerprint: str
    status: str  # "approved", or why not: "not approved by its owner", "certificate does not verify", ...
    current: bool  # the device this client runs on

    @property
    def approved(self) -> bool:
        return self.status == "approved"


class Directory:
    """The key directory seen through this device's trust store."""

    def __init__(
        self, call: Call, trust: TrustStore, log: KeyLog, device_id: str, warn: Callable[[str], None]
    ) -> None:
        self._call = call
        self._trust = trust
        self._log = log
        self._device_id = device_id
        self._warn = warn

    @property
    def trust(self) -> TrustStore:
        return self._trust

    @property
    def me(self) -> str:
        return self._trust.own_user_id

    # Master keys -------------------------------------------------------------------------------

    def server_identity(self, user_id: str) -> bytes | None:
        """The master key the server reports for `user_id` now, proven by the log (None before one
        is set, or for a user the server does not list)."""
        try:
            master, _ = self._proven_listing(user_id)
        except VeilError as error:
            if error.status == 404:
                return None
            raise
        return master

    def master_key_of(self, user_id: str) -> bytes | None:
        """The pinned master key of `user_id`, pinned from the server on first need."""
        user_id = canonical_uuid(user_id)
        pinned = self._trust.pinned(user_id)
        if pinned is not None or user_id == self.me:
            return pinned  # the own key comes only from this device or a linking one
        reported = self.server_identity(user_id)
        if reported is not None:
            self.observe(user_id, reported)
        return self._trust.pinned(user_id)

    def observe(self, user_id: str, master_key: bytes) -> None:
        """Take note of the master key the server reports; warn (and for the own user, refuse to
        trust it) when it is not the pinned one."""
        user_id = canonical_uuid(user_id)
        if user_id == self.me:
            own = self._trust.own_master_public_key
            if own is not None and own != master_key:
                self._warn(
                    "Your account's master key on the server is not the one this device holds: someone "
                    "with your password reset it. Your contacts will see a warning; if it was not you, "
                    "change your password (`veil-client password`) and reset the key from a device you "
                    "trust (`veil-client identity reset`)."
                )
            return
        try:
            state = self._trust.observe(user_id, master_key)
        except (CryptoError, ValueError):
            self._warn(f"User {user_id[:8]} publishes an unusable master key: they get nothing.")
            return
        if state is TrustState.CHANGED and not self._trust.is_verified(user_id):
            self._trust.accept(user_id)
            self._warn(
                f"User {user_id[:8]}'s master key changed (they reset it, or someone with their password "
                "did). Compare safety numbers: `veil-client verify` them."
            )

    def require_sendable(self, user_id: str) -> None:
        """`IdentityChangedError` when a verified user's key changed and the change is not accepted."""
        if self._trust.pending(user_id) is not None:
            raise IdentityChangedError(
                f"User {user_id[:8]}, whom you verified, has a new master key. Nothing goes to them until "
                "you compare safety numbers again (`veil-client verify`) or accept the new key "
                "(`veil-client accept-key`)."
            )

    # Devices -----------------------------------------------------------------------------------

    def listing(self, user_id: str) -> list[ListedDevice]:
        """A user's devices as the server lists them and the log proves (its master key observed
        on the way)."""
        master, devices = self._proven_listing(user_id)
        if master is not None:
            self.observe(user_id, master)
        return devices

    def _proven_listing(self, user_id: str) -> tuple[bytes | None, list[ListedDevice]]:
        """The master key and devices the server lists for `user_id`, once the log proves they are
        the user's latest leaf (`TransparencyError` otherwise). A change that commits between the
        listing and the proof is met by asking once more."""
        user_id = canonical_uuid(user_id)
        for attempt in range(2):
            master, devices = self._served_listing(user_id)
            try:
                leaf = self._log.check_user(user_id, master, devices)
            except SplitViewError:
                raise
            except TransparencyError:
                if attempt:
                    raise
                continue
            if user_id == self.me:
                self._log.observe_own(
                    user_id, leaf, devices, self._trust.own_master_public_key, self._device_id
                )
            return master, devices
        raise AssertionError("unreachable")  # pragma: no cover

    def _served_listing(self, user_id: str) -> tuple[bytes | None, list[ListedDevice]]:
        body = self._call("GET", f"/v1/users/{user_id}/devices").json()
        master = body.get("master_key")
        devices = []
        for item in body["items"]:
            try:
                devices.append(ListedDevice.from_api(item))
            except ValueError:
                self._warn(f"User {user_id[:8]} has a device with malformed keys: it gets nothing.")
        return (b64decode(master, size=32, field="master_key") if isinstance(master, str) else None), devices

    def trusted_devices(self, user_id: str, *, sending: bool = True) -> list[ListedDevice]:
        """The devices of `user_id` that its pinned master key certified (this device excluded).

        For `sending`, a verified user whose key changed is `IdentityChangedError`, and each
        refused device is named in a warning: it gets no keys and no messages.
        """
        user_id = canonical_uuid(user_id)
        devices = [d for d in self.listing(user_id) if d.device_id != self._device_id]
        if self._trust.pinned(user_id) is None and user_id != self.me:
            self.master_key_of(user_id)
        if sending:
            self.require_sendable(user_id)
        trusted, refused = self._trust.certified(user_id, devices)
        if sending:
            owner = "your" if user_id == self.me else f"user {user_id[:8]}'s"
            for device, reason in refused:
                self._warn(f"Skipping {owner} device {device.device_id[:8]}: {reason}; it gets no keys.")
        return trusted

    def statuses(self, user_id: str) -> list[DeviceStatus]:
        """Every listed device of `user_id` with whether this device trusts it."""
        user_id = canonical_uuid(user_id)
        devices = self.listing(user_id)
        if user_id != self.me:
            self.master_key_of(user_id)
        found = []
        for device in devices:
            current = device.device_id == self._device_id
            reason = self._trust.refusal(user_id, device)
            found.append(
                DeviceStatus(
                    device.device_id,
                    device_fingerprint(device.identity_key, device.signing_key),
                    "approved" if reason is None else reason,
                    current,
                )
            )
        return found

    def certify(self, device: ListedDevice) -> bytes:
        """Sign and publish the certificate of one of the own user's devices (primary devices only)."""
        master = self._trust.own_master
        if master is None:
            raise TrustError(
                "Only a device that holds your master key can approve devices; approve it from your "
                "first device (or one approved with --primary)."
            )
        signature = master.certify(self.me, device.device_id, device.identity_key, device.signing_key)
        self._call(
            "PUT",
            f"/v1/devices/{device.device_id}/certificate",
            json={"signature": b64encode(signature)},
            expect=(204,),
        )
        self._log.approved_here(device.device_id)
        return signature
