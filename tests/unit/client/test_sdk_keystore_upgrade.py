"""A keystore written by the frame-version-1 client opens in this one (no server needed to load)."""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path

from tests.unit.client.test_pairwise import VERSION_2_STATES
from veil.client.protocol.session import STATE_VERSION
from veil.client.sdk.http import VeilClient
from veil.client.sdk.keystore import ScryptParams, save_state

PASSPHRASE = "an old keystore's passphrase"
# A sender key distribution as the version-1 client framed it (126 bytes, no key id), waiting for
# its conversation to be checked when that client last saved.
V1_DISTRIBUTION = bytes([1, 0x11]) + os.urandom(124)


def test_a_version_1_keystore_with_waiting_sender_keys_opens(tmp_path: Path) -> None:
    state = json.loads(VERSION_2_STATES)["bob"]
    conversation = str(uuid.uuid4())
    state["veil_http"] = {
        "version": 2,
        "refresh_token": None,
        "distributed": [{"conversation_id": conversation, "epoch": 1, "devices": [str(uuid.uuid4())]}],
        "plaintexts": {},
        "inbox": [],
        "link_secret": base64.b64encode(os.urandom(10)).decode(),
        "memberships": [],
        "pending_sender_keys": [
            {
                "sender_id": str(uuid.uuid4()),
                "sender_device_id": str(uuid.uuid4()),
                "distribution": base64.b64encode(V1_DISTRIBUTION).decode(),
            }
        ],
        "pending_links": [],
    }
    keystore = tmp_path / "bob.veilks"
    save_state(keystore, state, PASSPHRASE, ScryptParams(log2_n=10))

    client = VeilClient("https://127.0.0.1:9", keystore=keystore, passphrase=PASSPHRASE)

    assert client.crypto.to_state()["version"] == STATE_VERSION
    assert client.crypto.keys.to_state() == state["keys"]  # every key kept
    # The waiting v1 key can never be named by a message of this version, and the record of who
    # held this device's old sender key has no key id: both are dropped, so keys go out again.
    assert client._pending_sender_keys == []
    assert client._distributed == {}
