"""Who is in a conversation, as lines to print: the members (chat's `/members`) and their safety
numbers (chat's `/verify`). Names come from the profile's address book; someone not in it is shown
by their whole user id, which is what `contacts add` needs."""

from __future__ import annotations

from veil.client.cli.profile import Profile
from veil.client.protocol.identity import format_safety_number
from veil.client.sdk.http import VeilClient
from veil.client.sdk.models import Conversation, Member, TrustError


def member_lines(client: VeilClient, profile: Profile, conversation: Conversation) -> list[str]:
    """A count, then one line per member (you first, then by name) with what sets them apart:
    a group role other than member, an invitation not yet accepted, a safety number compared."""
    members = sorted(
        conversation.members,
        key=lambda m: (m.user_id != client.user_id, profile.name_of(m.user_id)),
    )
    count = f"{len(members)} member{'' if len(members) == 1 else 's'}:"
    return [count, *(f"  {_member(client, profile, conversation, m)}" for m in members)]


def _member(client: VeilClient, profile: Profile, conversation: Conversation, member: Member) -> str:
    notes = [member.role] if conversation.type == "group" and member.role != "member" else []
    if member.state != "joined":
        notes.append(member.state)
    if member.user_id != client.user_id and client.is_verified(member.user_id):
        notes.append("verified")
    name = profile.name_of(member.user_id)
    if member.user_id != client.user_id and member.user_id not in profile.contacts.values():
        name = f"{member.user_id} (`veil-client contacts add NAME {member.user_id}` names them)"
    return name + (f" ({', '.join(notes)})" if notes else "")


def safety_number_lines(client: VeilClient, profile: Profile, conversation: Conversation) -> list[str]:
    """Each other member's safety number, in the rows `veil-client verify` prints, then how to
    compare them. A member whose verified key changed, or who has no key yet, gets a line that says
    so instead of a number."""
    others = [m.user_id for m in conversation.members if m.user_id != client.user_id]
    if not others:
        return ["Nobody else is in this conversation."]
    lines: list[str] = []
    for user_id in others:
        name = profile.name_of(user_id)
        client.devices_of(user_id)  # takes note of the key the server shows now, so a change is seen
        if user_id in client.changed_identities():
            lines.append(
                f"{name}'s master key changed since you verified them: "
                f"`veil-client accept-key {name}` says what that means."
            )
            continue
        try:
            groups = format_safety_number(client.safety_number(user_id)).split(" ")
        except TrustError as error:  # its text is written for people and names no secret
            lines.append(f"{name}: no safety number yet ({' '.join(str(error).split())})")
            continue
        lines.append(f"Safety number with {name}{' (verified)' if client.is_verified(user_id) else ''}:")
        lines.extend("    " + " ".join(groups[row : row + 4]) for row in range(0, len(groups), 4))
    lines.append(
        "Compare each number with the one their device shows for you, in person or on a call you "
        "trust; `veil-client verify NAME` records that they match."
    )
    return lines
