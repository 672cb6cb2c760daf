"""The export archive: a machine-readable JSON document plus a short summary a person can read."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime
from typing import Any

from veil.account.store import AccountRecord
from veil.core.wire import format_timestamp

FORMAT = "veil-export/1"


def _plain(value: object) -> Any:
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | memoryview):
        return base64.b64encode(bytes(value)).decode()
    return value


def _rows(rows: list[dict[str, object]]) -> list[dict[str, Any]]:
    return [{key: _plain(value) for key, value in row.items()} for row in rows]


def _after(value: object, moment: datetime) -> bool:
    return isinstance(value, datetime) and value > moment


def summary(account: AccountRecord, sections: dict[str, list[dict[str, object]]], now: datetime) -> str:
    active = sum(1 for s in sections["sessions"] if s["revoked_at"] is None and _after(s["expires_at"], now))
    stored = sum(int(str(a["size"])) for a in sections["attachments"])
    backups = sections.get("backup", [])
    backup = (
        f"An encrypted backup of {backups[0]['size']} bytes, made {_plain(backups[0]['created_at'])}.\n"
        if backups
        else "No encrypted backup.\n"
    )
    return (
        f"Veil data export for {account.email}, made {format_timestamp(now)}.\n"
        f"Account created {format_timestamp(account.created_at)}; status {account.status}.\n"
        f"{len(sections['sessions'])} sessions ({active} active), {len(sections['devices'])} devices with "
        f"published public keys, {len(sections['conversations'])} conversations, "
        f"{len(sections['messages_sent'])} messages sent, {len(sections['attachments'])} attachments "
        f"({stored} bytes of ciphertext).\n"
        f"{backup}"
        "Messages, files and backups are end-to-end encrypted: Veil holds only ciphertext and the "
        "metadata listed here. The keys that open them exist only on your devices and are not part "
        "of this export; neither are message, file or backup contents.\n"
    )


def build(account: AccountRecord, sections: dict[str, list[dict[str, object]]], now: datetime) -> bytes:
    document = {
        "format": FORMAT,
        "generated_at": format_timestamp(now),
        "summary": summary(account, sections, now),
        "profile": {
            "user_id": str(account.id),
            "email": account.email,
            "email_verified": account.email_verified,
            "status": account.status,
            "role": account.role,
            "created_at": format_timestamp(account.created_at),
            "updated_at": format_timestamp(account.updated_at),
        },
        **{name: _rows(rows) for name, rows in sections.items()},
    }
    return json.dumps(document, indent=2, ensure_ascii=False).encode()
