"""Renders docs/privacy.md from the personal-data registry and the configuration's defaults, so
the document cannot drift from the code (a test compares them).

    python -m veil.account.privacy_doc > docs/privacy.md
"""

from __future__ import annotations

from veil.account.registry import NOT_PERSONAL, REGISTRY
from veil.core.config import Settings


def _default(field: str) -> object:
    return Settings.model_fields[field].default


def _columns(names: tuple[str, ...]) -> str:
    return ", ".join(f"`{name}`" for name in names)


def render() -> str:
    inventory = "\n".join(
        f"| `{e.table}` | {e.holds} | {_columns(e.user_columns)} | {e.export} | {e.erasure} |"
        for e in REGISTRY
    )
    others = "\n".join(f"| `{table}` | {why} |" for table, why in NOT_PERSONAL.items())
    retention = [
        ("Messages (ciphertext envelopes)", "VEIL_RETENTION_MESSAGES_DAYS", "retention_messages_days"),
        ("Queued device messages", "VEIL_DEVICE_MESSAGE_TTL_DAYS", "device_message_ttl_days"),
        ("Attachments (objects and rows)", "VEIL_RETENTION_ATTACHMENTS_DAYS", "retention_attachments_days"),
        ("Ended sessions (IP, user agent)", "VEIL_RETENTION_SESSIONS_DAYS", "retention_sessions_days"),
        ("Logs (no content; kept by the log pipeline)", "VEIL_RETENTION_LOGS_DAYS", "retention_logs_days"),
    ]
    retention_rows = "\n".join(
        f"| {what} | `{var}` | {_default(field)} days |" for what, var, field in retention
    )
    code_ttl, attempts = _default("account_code_ttl_seconds"), _default("account_code_attempts")
    grace = _default("erasure_grace_days")
    return f"""# Privacy: what Veil stores, where, and for how long

Generated from `veil/account/registry.py` and the configuration defaults by
`python -m veil.account.privacy_doc > docs/privacy.md`; a test fails when this file and the code
disagree.

## Where the data lives
- **PostgreSQL** (`DATABASE_URL`): accounts, sessions, public keys, conversations, message
  envelopes (ciphertext and metadata), attachment and backup records. Development:
  `$VEIL_DATA_DIR/postgres`.
- **S3-compatible object store** (`S3_ENDPOINT`, bucket `S3_BUCKET`, region `S3_REGION`, default
  `{_default("s3_region")}`, an EU region): attachment ciphertext, users' encrypted backups
  (ciphertext made by their clients) and export archives only, under random keys. Development:
  `$VEIL_DATA_DIR/s3`.
- **Logs**: standard error, one JSON object per line, without passwords, tokens, keys or content;
  the deployment's log pipeline keeps them for `VEIL_RETENTION_LOGS_DAYS`.
- The server never holds a private key, a content key or plaintext: messages and files are
  encrypted on the clients (docs/e2ee.md).

## Personal data, table by table
| table | holds | columns referring to a user | export | erasure |
|---|---|---|---|---|
{inventory}

Tables without personal data:

| table | why |
|---|---|
{others}

## Retention
One scheduled job (the maintenance round, every minute, one process at a time) enforces these and
logs counts only. Each period is at most 30 days in development and tests and at most 90 in
production (the configuration refuses more).

| data | variable | default |
|---|---|---|
{retention_rows}

Data-subject requests are kept 30 days. Export archives are deleted
`VEIL_EXPORT_ARCHIVE_TTL` after they are built (default {_default("export_archive_ttl_seconds")} s); each
download URL for one lives at most `VEIL_EXPORT_URL_TTL` (default {_default("export_url_ttl_seconds")} s).

Backups (`veil backup`, [operations.md](operations.md#backup-and-restore)) hold everything above
as it was when they were taken, so keep them no longer than the longest period above (30 days by
default) and encrypted at rest. A restore brings back what was erased or expired after the backup:
after restoring, erase again every account whose erasure was requested since (the data-subject
requests table of the live system, or the incident log, says which).

## Data-subject rights
- **Export, erasure, email change** are requested with `POST /v1/account/requests` and confirmed
  with a six-digit code sent by email (stored only as a hash, valid
  {code_ttl} s, {attempts} attempts, single use). Erasure and email
  change also need the current password.
- **Erasure**: at once the account is disabled, every session revoked and every socket closed;
  after `VEIL_ERASURE_GRACE_DAYS` (default {grace}) the purge removes every row above that
  refers to the user and, through the sweep, their attachments' and backup's objects. What remains
  is a tombstone (`erasure_tombstones`: when the erasure was requested and when it was done, no
  identifier), and the user's leaves in the key-transparency log (`transparency_leaves`): public keys and
  certificates under SHA-256 of the user id, never an email, kept because deleting a leaf would
  break the log every client checks the key directory against (docs/adr/0019); the purge appends
  one last leaf saying the account has no keys any more.
  The same email address can register again afterwards.
- **Export**: a JSON archive (with a short readable summary) of the sections named above, never
  ciphertext or content keys, downloaded through an expiring presigned URL.
"""


if __name__ == "__main__":
    print(render(), end="")
