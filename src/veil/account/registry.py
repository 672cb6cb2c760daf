"""Every table that holds personal data, with how it is exported and how erasure removes it.

This is the GDPR inventory by construction: a test lists every table with a column that refers to
a user (a foreign key to `users` or `sessions`, or a user-id column without one) and fails when one
is missing here; another purges an account and finds no row or object that still refers to it.
`docs/privacy.md` is rendered from this registry and the retention settings, and a test keeps the
file in step with the code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PersonalData:
    table: str
    # Columns that hold a user id, or a session (= device) id of a user.
    user_columns: tuple[str, ...]
    holds: str
    export: str
    erasure: str


CASCADE = "deleted with the account (ON DELETE CASCADE)"

REGISTRY: tuple[PersonalData, ...] = (
    PersonalData(
        "users",
        ("id",),
        "email address, Argon2id password hash, role, status, timestamps",
        "`profile` (never the password hash)",
        "deleted by the purge; a tombstone without any identifier remains",
    ),
    PersonalData(
        "sessions",
        ("id", "user_id"),
        "device name, IP address and user agent of each login, timestamps",
        "`sessions`",
        CASCADE + "; ended sessions also by retention",
    ),
    PersonalData(
        "refresh_tokens", ("session_id",), "SHA-256 of refresh tokens", "not exported (secrets)", CASCADE
    ),
    PersonalData(
        "signups",
        (),
        "a sign-up waiting for its emailed code: the address, an Argon2id password hash, the code's hash",
        "not exported (no account exists yet)",
        "deleted when the code is confirmed (the account is created) or once expired (15 minutes)",
    ),
    PersonalData(
        "device_tokens",
        ("user_id",),
        "SHA-256 of the known-device tokens that exempt a login from the account-wide lock-out",
        "not exported (secrets)",
        CASCADE + "; all of them at a password reset; by their lifetime (`VEIL_DEVICE_TOKEN_TTL_DAYS`)",
    ),
    PersonalData(
        "device_keys",
        ("device_id", "user_id"),
        "public identity, signing and signed prekeys per device, and the master key's certificate",
        "`devices`",
        CASCADE + "; at once when the session ends (erasure ends every session)",
    ),
    PersonalData(
        "master_keys",
        ("user_id",),
        "the user's master key (an Ed25519 public key that certifies the user's devices), timestamps",
        "`identity`",
        CASCADE,
    ),
    PersonalData(
        "one_time_prekeys",
        ("device_id",),
        "public one-time prekeys",
        "`devices` (count left)",
        CASCADE,
    ),
    PersonalData(
        "pq_last_resort_prekeys",
        ("device_id",),
        "each device's public last-resort ML-KEM-768 prekey and its signature",
        "`devices`",
        CASCADE + "; at once when the session ends, or when the device's signing key changes",
    ),
    PersonalData(
        "pq_one_time_prekeys",
        ("device_id",),
        "public one-time ML-KEM-768 prekeys and their signatures",
        "`devices` (count left)",
        CASCADE + "; each one as it is handed out; at once when the session ends, or when the "
        "device's signing key changes",
    ),
    PersonalData(
        "pq_spent_prekey_ids",
        ("device_id",),
        "the ids of one-time ML-KEM-768 prekeys already handed out (so none is handed out twice)",
        "not exported (key ids only)",
        CASCADE + "; at once when the session ends",
    ),
    PersonalData(
        "device_messages",
        ("recipient_device_id", "sender_user_id", "sender_device_id"),
        "device-to-device ciphertext envelopes queued for a device",
        "not exported (ciphertext for other devices)",
        CASCADE + "; by the device-message lifetime otherwise",
    ),
    PersonalData(
        "device_message_gaps",
        ("recipient_device_id",),
        "count of device messages that expired unread",
        "not exported",
        CASCADE,
    ),
    PersonalData(
        "key_changes",
        ("user_id", "device_id"),
        "when a user's device keys changed",
        "not exported (derived from `devices`)",
        CASCADE,
    ),
    PersonalData(
        "conversations",
        ("direct_pair",),
        "type, epoch, encrypted group metadata; a direct conversation's pair of user ids",
        "`conversations` (with the membership)",
        "the purge clears the pair and deletes conversations nobody has joined any more",
    ),
    PersonalData(
        "members",
        ("user_id", "invited_by"),
        "conversation memberships, roles, who invited whom",
        "`conversations`",
        CASCADE + "; `invited_by` set to NULL by the purge",
    ),
    PersonalData(
        "messages",
        ("sender_id", "sender_device_id"),
        "ciphertext envelopes and their metadata (sender, time, size, type)",
        "`messages_sent` (metadata only, never ciphertext)",
        CASCADE + "; by message retention otherwise",
    ),
    PersonalData(
        "receipts",
        ("user_id",),
        "delivered/read positions per conversation",
        "`receipts`",
        CASCADE,
    ),
    PersonalData(
        "device_cursors", ("device_id",), "acknowledged position per device", "not exported", CASCADE
    ),
    PersonalData(
        "membership_events",
        ("actor_id", "actor_device_id", "subject_id"),
        "who joined, left, invited or removed whom or changed whose role, and when; the acting "
        "device; the commit (a statement signed by that device, opaque to the server)",
        "not exported (`conversations` holds the current state)",
        "the purge deletes events about the user and clears the user as actor: actor, acting "
        "device and the commit it signed",
    ),
    PersonalData(
        "ws_tickets", ("session_id",), "single-use WebSocket tickets (30 s)", "not exported", CASCADE
    ),
    PersonalData(
        "blocks",
        ("blocker_id", "blocked_id"),
        "who blocked whom, and since when",
        "`blocks` (the users the account blocked; never who blocked it)",
        CASCADE + " (the blocker's and the blocked account's alike)",
    ),
    PersonalData(
        "attachments",
        ("owner_id",),
        "encrypted files: owner, conversation, size, SHA-256 of the ciphertext, timestamps",
        "`attachments` (metadata only)",
        "owner set to NULL, then the sweep deletes the object and the row; by attachment retention",
    ),
    PersonalData(
        "backups",
        ("user_id",),
        "each user's encrypted client backup: object key, size and SHA-256 of the ciphertext, "
        "timestamps (the object is ciphertext under a key only the user's recovery key opens)",
        "`backup` (size and time; never the object)",
        "user set to NULL (also when the user deletes or replaces the backup), then the sweep "
        "deletes the object and the row",
    ),
    PersonalData(
        "account_requests",
        ("user_id",),
        "export, erasure and email-change requests (new email address, code hash)",
        "`account_requests` (type and timestamps)",
        CASCADE + "; after 30 days otherwise",
    ),
    PersonalData(
        "mail_outbox",
        (),
        "mail waiting to be sent: recipient address, subject and body (which may hold a one-time code)",
        "not exported (transient: a row lives until its mail is sent)",
        "deleted as soon as the mail is sent, or dropped after the last failed attempt (about an hour "
        "with the default `VEIL_MAIL_ATTEMPTS` and backoff); the purge deletes what is still queued "
        "for the account's address",
    ),
    PersonalData(
        "password_resets",
        ("user_id",),
        "pending password resets of an account, at most five (code hash, attempts, timestamps)",
        "not exported (a code hash that lives minutes)",
        CASCADE + "; all of them deleted when one is used or the password changes; the oldest "
        "dropped by a sixth request; each deleted once expired",
    ),
    PersonalData(
        "export_archives",
        ("user_id",),
        "where an export archive waits in the object store",
        "not exported (the archive itself)",
        "the sweep deletes the object and the row when the URL expires or the owner is gone",
    ),
    PersonalData(
        "transparency_leaves",
        (),
        "the key-transparency log: per change of a user's master key or certified devices, a leaf "
        "with SHA-256 of the user id (never the id itself or an email), a version, the master key "
        "and SHA-256 of the certified devices' public keys and certificates",
        "not exported (public to every signed-in user: `GET /v1/transparency/inclusion`)",
        "append-only, kept after erasure (integrity of the key directory, docs/adr/0019): the purge "
        "appends a last leaf with no master key and no devices; the database refuses to change or "
        "delete a leaf",
    ),
    PersonalData(
        "incidents",
        ("created_by",),
        "breach-handling incidents: title, scope, mitigation, the operator who opened one",
        "not exported (operator records)",
        "append-only; the operator's id is set to NULL when that account is purged",
    ),
    PersonalData(
        "incident_entries",
        ("author_id",),
        "timestamped updates and mitigation steps of an incident, and who wrote them",
        "not exported (operator records)",
        "append-only; the author's id is set to NULL when that account is purged",
    ),
    PersonalData(
        "incident_notifications",
        ("user_id",),
        "which users were told about an incident, and when",
        "not exported",
        "append-only; the user's id is set to NULL when the account is purged (the time stays)",
    ),
    PersonalData(
        "operator_audit",
        ("operator_id", "target_user_id"),
        "every operator action: who, what, on which account or incident, when",
        "not exported (operator records)",
        "append-only; ids of purged accounts are set to NULL, the action stays",
    ),
)

# Tables with no personal data, and why: the completeness test accepts them only if listed here.
NOT_PERSONAL: dict[str, str] = {
    "schema_migrations": "migration bookkeeping",
    "rate_limits": "hashed, expiring limiter keys (the purge deletes the user's own)",
    "erasure_tombstones": "when an erasure was requested and done; no identifier",
    "invites": "hashed invite codes, their remaining uses and expiry; nothing about who used them",
    "transparency_nodes": "hashes of subtrees of the key-transparency log (hashes of hashes)",
    "transparency_heads": "signed tree heads of the key-transparency log: size, root hash, time",
}


def by_table() -> dict[str, PersonalData]:
    return {entry.table: entry for entry in REGISTRY}
