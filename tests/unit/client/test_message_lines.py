"""How the command line shows an unreadable message: a sentence naming the sender as the address
book knows them, in the chat screen and in `history` alike (cli/chat.py)."""

from __future__ import annotations

from pathlib import Path

from veil.client.cli.chat import describe
from veil.client.cli.failures import explain
from veil.client.cli.profile import Profile
from veil.client.protocol.errors import UnknownSenderKeyError
from veil.client.sdk.models import GroupMessage

ME = "00000000-0000-4000-8000-000000000001"
BOB = "00000000-0000-4000-8000-000000000002"


def unreadable(sender_id: str, failure: str | None) -> GroupMessage:
    return GroupMessage(
        message_id="00000000-0000-4000-8000-0000000000aa",
        conversation_id="00000000-0000-4000-8000-0000000000bb",
        seq=7,
        sender_id=sender_id,
        sender_device_id="00000000-0000-4000-8000-0000000000cc",
        content_type="text",
        key_epoch=0,
        parent_id=None,
        created_at="2026-12-07T10:00:00.000Z",
        plaintext=None,
        error="cannot read this message yet: waiting for the sender's new key",
        failure=failure,
    )


def test_an_unreadable_message_names_its_sender_and_never_an_exception(tmp_path: Path) -> None:
    profile = Profile(tmp_path, user_id=ME, contacts={"Bob": BOB})

    line = describe(unreadable(BOB, "waiting_for_key"), profile)
    assert line.endswith("Bob: [cannot read this message yet: waiting for Bob's new key]")

    own = describe(unreadable(ME, "waiting_for_key"), profile)
    assert own.endswith("you: [cannot read this message yet: waiting for your other device's new key]")

    unknown = describe(unreadable(BOB, None), profile)
    assert unknown.endswith("Bob: [this message could not be read]")


def test_a_refusal_that_ends_a_command_reads_as_a_sentence_without_the_exception_name() -> None:
    line = explain(UnknownSenderKeyError("sender key 7 of device 3f2a is unknown"), url="https://veil.test")
    assert (
        line == "A message could not be used: cannot read this message yet: waiting for the sender's new key."
    )
