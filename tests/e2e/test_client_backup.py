"""The encrypted backup end to end: a lost laptop's history and keys come back on a new device from
the backup slot with the recovery key alone, and nothing the server can do with the slot makes a
client take in what is not the user's own backup."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import stat
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_cli import Cli, assert_readable_failure
from tests.e2e.test_client_transparency import Forked, forked  # noqa: F401 (a fixture)
from tests.support.clients import FAST, Clients
from tests.support.files import s3_client
from tests.support.forked_log import rewrite_entries_of
from tests.support.lying_server import LyingServer
from tests.support.server import LiveServer
from tests.support.users import PASSWORD, bearer, login
from veil.client.protocol.backup import BackupDecryptionError, BackupOwnerError
from veil.client.protocol.codec import b64encode
from veil.client.protocol.recovery_key import RecoveryKeyTextError, format_recovery_key, new_recovery_key
from veil.client.protocol.transparency import SPLIT_VIEW, user_hash
from veil.client.sdk.backup import BackupReplacedError, NoBackupError
from veil.client.sdk.http import VeilClient
from veil.client.sdk.models import DeviceNotApprovedError
from veil.core.config import Settings

pytestmark = pytest.mark.slow

CANARIES = (
    "canary-b01 alice to bob: the spare key is under the blue pot 5e2d",
    "canary-b02 bob to alice: noted, and the alarm code is 7741 a0c3",
)
RECOVERY_KEY = re.compile(r"^    ([0-9A-Z]{4}(?:-[0-9A-Z]{4}){6})$", re.MULTILINE)


def chat(alice: VeilClient, bob: VeilClient) -> str:
    """Alice and Bob exchange the canaries; the conversation id."""
    direct = alice.create_direct(bob.user_id)
    alice.send_text(direct.conversation_id, CANARIES[0])
    assert [m.text for m in bob.history(direct.conversation_id)] == [CANARIES[0]]
    bob.send_text(direct.conversation_id, CANARIES[1])
    assert [m.text for m in alice.history(direct.conversation_id)] == list(CANARIES)
    return direct.conversation_id


def bucket_objects(settings: Settings) -> list[bytes]:
    store = s3_client(settings)
    pages = store.get_paginator("list_objects_v2").paginate(Bucket=settings.s3_bucket)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return [store.get_object(Bucket=settings.s3_bucket, Key=key)["Body"].read() for key in keys]


def new_device(clients: Clients, name: str, email: str) -> VeilClient:
    device = clients.open(name)
    device.login(email, PASSWORD, device_name=name)
    return device


def test_a_lost_laptop_comes_back_from_the_backup(clients: Clients, settings: Settings) -> None:
    alice, bob = clients.new("alice"), clients.new("bob")
    conversation = chat(alice, bob)
    alice.mark_verified(bob.user_id)
    recovery_key = alice.create_backup({"contacts": {"bob": bob.user_id}}).recovery_key
    status = alice.backup_status()
    assert status is not None and status.size > 0

    # The server holds ciphertext only: no canary in any object of the bucket.
    objects = bucket_objects(settings)
    assert any(hashlib.sha256(o).digest() == base64.b64decode(status.sha256) for o in objects)
    for stored in objects:
        assert all(canary.encode() not in stored for canary in CANARIES)

    # The laptop is lost: its session ends, and Alice signs in on a new device, which is pending.
    alice.logout()
    laptop = new_device(clients, "alice-new-laptop", clients.emails["alice"])
    assert laptop.identity_role == "pending"

    restored = laptop.restore_backup(recovery_key)
    assert restored.approved and restored.messages >= 2 and restored.verified_contacts == 1
    assert restored.address_book == {"contacts": {"bob": bob.user_id}}
    assert laptop.identity_role == "primary"  # the restored master key approved it, no other device
    assert [m.text for m in laptop.history(conversation)] == list(CANARIES)
    assert laptop.is_verified(bob.user_id)

    # Bob's client trusts the new device (certified by Alice's master key) and sends to it.
    bob.send_text(conversation, "canary-b03 bob to the new laptop")
    assert laptop.history(conversation)[-1].text == "canary-b03 bob to the new laptop"
    laptop.send_text(conversation, "canary-b04 the new laptop to bob")
    assert bob.history(conversation)[-1].text == "canary-b04 the new laptop to bob"

    laptop.delete_backup()
    assert laptop.backup_status() is None
    with pytest.raises(NoBackupError):
        laptop.restore_backup(recovery_key)


def test_a_wrong_or_mistyped_recovery_key_changes_nothing(clients: Clients) -> None:
    alice, bob = clients.new("alice"), clients.new("bob")
    conversation = chat(alice, bob)
    recovery_key = alice.create_backup({}).recovery_key
    alice.logout()
    laptop = new_device(clients, "alice-new-laptop", clients.emails["alice"])

    with pytest.raises(BackupDecryptionError):
        laptop.restore_backup(format_recovery_key(new_recovery_key()))
    groups = recovery_key.split("-")
    groups[3] = "ZZZZ" if groups[3] != "ZZZZ" else "YYYY"
    with pytest.raises(RecoveryKeyTextError):
        laptop.restore_backup("-".join(groups))
    assert laptop.identity_role == "pending"
    with pytest.raises(DeviceNotApprovedError):  # nothing was taken in: it still reads nothing
        laptop.history(conversation)
    with pytest.raises(DeviceNotApprovedError):  # and it may not replace the backup with an empty one
        laptop.create_backup({})
    # The right key still works afterwards.
    assert laptop.restore_backup(recovery_key).approved


def _upload_as(api: LiveServer, email: str, blob: bytes) -> None:
    """Put `blob` into `email`'s backup slot through the API, as a server operator could place any
    object there: reserve, upload to the presigned URL, complete."""
    with api.client() as client:
        headers = bearer(login(client, email))
        request = {"size": len(blob), "sha256": b64encode(hashlib.sha256(blob).digest())}
        reserved = client.put("/v1/backup", json=request, headers=headers)
        assert reserved.status_code == 201, reserved.text
        upload = reserved.json()["upload"]
        with httpx.Client() as store:
            sent = store.request(upload["method"], upload["url"], content=blob, headers=upload["headers"])
            assert sent.status_code == 200, sent.text
        assert client.post("/v1/backup/complete", headers=headers).status_code == 200


def _download_own(api: LiveServer, email: str) -> bytes:
    with api.client() as client:
        body = client.get("/v1/backup", headers=bearer(login(client, email))).json()
    with httpx.Client() as store:
        return store.get(body["download"]["url"]).content


def test_another_users_backup_in_the_slot_is_refused(clients: Clients, api: LiveServer) -> None:
    alice, bob = clients.new("alice"), clients.new("bob")
    chat(alice, bob)
    bob_key = bob.create_backup({}).recovery_key
    bobs_object = _download_own(api, clients.emails["bob"])

    # The server hands Alice Bob's backup: its header names Bob, so it is refused before decrypting,
    # even with the key that opens it.
    _upload_as(api, clients.emails["alice"], bobs_object)
    with pytest.raises(BackupOwnerError):
        alice.restore_backup(bob_key)
    # Relabelled as Alice's: the header is bound into every chunk, so it no longer opens.
    relabelled = bytearray(bobs_object)
    relabelled[6:22] = bytes.fromhex(alice.user_id.replace("-", ""))
    _upload_as(api, clients.emails["alice"], bytes(relabelled))
    with pytest.raises(BackupDecryptionError):
        alice.restore_backup(bob_key)
    assert alice.identity_role == "primary" and not alice.is_verified(bob.user_id)


@pytest.fixture
def cli(api: LiveServer, tmp_path: Path) -> Cli:
    return Cli(api, tmp_path / "home")


def test_the_cli_backs_up_restores_and_exports(cli: Cli, tmp_path: Path) -> None:
    ada_email, ada_id = cli.sign_up("ada")
    _, bob_id = cli.sign_up("bob")
    cli.ok("ada", "contacts", "add", "bob", bob_id)
    cli.ok("bob", "contacts", "add", "ada", ada_id)
    cli.ok("ada", "send", "bob", CANARIES[0])
    cli.ok("bob", "send", "ada", CANARIES[1])

    # The history as JSON, without the server's export (no emailed code).
    output = tmp_path / "history.json"
    cli.ok("ada", "export", "--history-only", "--output", str(output))
    document = json.loads(output.read_text())
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    assert document["format"] == "veil-history/1"
    [conversation] = document["conversations"]
    assert conversation["name"] == "bob"
    assert [(m["text"], m["sender_name"], m["from_me"]) for m in conversation["messages"]] == [
        (CANARIES[0], None, True),
        (CANARIES[1], "bob", False),
    ]

    # The full export: the server's copy (emailed code) with the decrypted history added.
    archive_path = tmp_path / "archive.json"
    exported = cli.run_with_code("ada", "export", "--output", str(archive_path), email=ada_email)
    assert exported.returncode == 0, exported.stderr
    archive = json.loads(archive_path.read_text())
    assert archive["format"] == "veil-export/1"
    texts = [m["text"] for m in archive["client_history"]["conversations"][0]["messages"]]
    assert texts == list(CANARIES)

    created = cli.ok("ada", "backup", "create", "--no-qr")
    lines = RECOVERY_KEY.findall(created)
    assert len(lines) == 2, created
    recovery_key = "-".join(lines)
    assert "backup status" not in created and "bytes" in cli.ok("ada", "backup", "status")
    status = json.loads(cli.ok("ada", "backup", "status", "--json"))
    assert set(status) == {"size", "sha256", "created_at"}
    assert recovery_key not in "".join(
        p.read_text(errors="replace") for p in cli.home.rglob("*") if p.is_file()
    )

    cli.ok("ada", "logout")  # the lost laptop
    login = cli.ok("laptop", "login", ada_email, stdin=f"{PASSWORD}\n")
    assert "pending" in login
    wrong = cli.run("laptop", "backup", "restore", stdin=format_recovery_key(new_recovery_key()) + "\n")
    assert_readable_failure(wrong, "does not open your backup")
    typo = cli.run("laptop", "backup", "restore", stdin=recovery_key[:-1] + "\n")
    assert_readable_failure(typo, "not a recovery key")
    restored = cli.ok("laptop", "backup", "restore", stdin=recovery_key.lower().replace("-", " ") + "\n")
    assert "1 contact" in restored and "approved this device" in restored, restored
    assert "primary" in cli.ok("laptop", "whoami")
    assert "bob" in cli.ok("laptop", "contacts")
    history = cli.ok("laptop", "history", "bob")
    assert CANARIES[0] in history and CANARIES[1] in history
    cli.ok("bob", "send", "ada", "canary-b05 to the restored laptop")
    assert "canary-b05" in cli.ok("laptop", "history", "bob")
    assert "deleted" in cli.ok("laptop", "backup", "delete", "--yes")
    assert_readable_failure(cli.run("laptop", "backup", "restore", stdin=recovery_key + "\n"), "no backup")


def test_a_restore_trusts_no_key_the_server_no_longer_shows(clients: Clients) -> None:
    """Keys changed since the backup: its master key (Alice reset hers) approves nothing, and Bob,
    verified in the backup under the key he has since replaced, is not marked verified again."""
    alice, bob = clients.new("alice"), clients.new("bob")
    chat(alice, bob)
    alice.mark_verified(bob.user_id)
    recovery_key = alice.create_backup({}).recovery_key
    alice.reset_identity(PASSWORD)
    bob.reset_identity(PASSWORD)

    laptop = new_device(clients, "alice-new-laptop", clients.emails["alice"])
    laptop.take_warnings()
    restored = laptop.restore_backup(recovery_key)
    assert not restored.approved and restored.verified_contacts == 0
    assert laptop.identity_role == "pending"
    assert not laptop.is_verified(bob.user_id)
    warnings = " ".join(laptop.take_warnings())
    assert "no longer your account's" in warnings
    assert f"User {bob.user_id[:8]} was verified in your backup" in warnings


def test_a_backup_shows_a_new_device_a_forked_log(
    clients: Clients,
    api: LiveServer,
    forked: Forked,  # noqa: F811 (the fixture imported above)
) -> None:
    """The new device is shown a forked log from its first request (Carol's entries rewritten), which
    alone it could not tell from the real one; the head in the backup was seen on the real log, so
    the restore finds the two cannot both be true and says so."""
    carol, alice = clients.new("carol"), clients.new("alice")
    alice.transparency_head()  # the real log, with Carol's entries
    recovery_key = alice.create_backup({}).recovery_key
    alice.logout()

    lying = LyingServer(api.ca_file)
    forked(carol, rewrite_entries_of(user_hash(carol.user_id))).install(lying)
    laptop = VeilClient(
        api.base_url,
        verify=api.ca_file,
        keystore=clients.keystore("alice-laptop"),
        passphrase=clients.passphrase("alice-laptop"),
        scrypt=FAST,
        transport=lying,
    )
    clients.opened.append(laptop)
    laptop.login(clients.emails["alice"], PASSWORD)
    laptop.transparency_head()
    laptop.take_warnings()

    laptop.restore_backup(recovery_key)
    assert any("does not check out" in w and SPLIT_VIEW in w.lower() for w in laptop.take_warnings())
    # The rest goes on: the fork is about Carol, and Alice's own key is proven on either side of it.
    assert laptop.identity_role == "primary"


def test_two_devices_backing_up_at_once_never_leave_a_key_that_opens_nothing(clients: Clients) -> None:
    """The slot's completion is not tied to a reservation: whichever device completes last may
    complete the other's object. The client compares what became current with what it sent, so
    the device whose object did not win fails instead of showing a recovery key."""
    alice = clients.new("alice")
    tablet = new_device(clients, "alice-tablet", clients.emails["alice"])
    alice.approve_device(tablet.link_code())
    assert tablet.poll_link()
    made_by_tablet: list[str] = []

    def tablet_backs_up_first(request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path == "/v1/backup/complete" and not made_by_tablet:
            made_by_tablet.append(tablet.create_backup({}).recovery_key)  # drops Alice's reservation

    alice._http.event_hooks["request"].append(tablet_backs_up_first)
    with pytest.raises(BackupReplacedError):
        alice.create_backup({})
    alice._http.event_hooks["request"].clear()

    # What is current is the tablet's, and the key the tablet showed opens it.
    fresh = new_device(clients, "alice-fresh", clients.emails["alice"])
    assert fresh.restore_backup(made_by_tablet[0]).created_at


def test_a_completion_whose_answer_was_lost_is_confirmed_by_reading_the_slot(clients: Clients) -> None:
    alice = clients.new("alice")

    def answer_lost(response: httpx.Response) -> None:
        if response.request.method == "POST" and response.request.url.path == "/v1/backup/complete":
            raise httpx.ReadError("connection reset after the server answered", request=response.request)

    alice._http.event_hooks["response"].append(answer_lost)
    made = alice.create_backup({})
    alice._http.event_hooks["response"].clear()
    assert alice.backup_status() == made.status
    alice.logout()
    laptop = new_device(clients, "alice-new-laptop", clients.emails["alice"])
    assert laptop.restore_backup(made.recovery_key).approved
