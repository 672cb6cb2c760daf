"""Creating the benchmarks' users through the real sign-up: register, read the emailed code from the
development mail sink (`<data_dir>/mail`), verify. There is no switch that turns verification off.

Every scenario needs tens to hundreds of fresh users, so codes are collected in one pass over the
sink per poll (each message file parsed once), not with one directory scan per user.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import email.utils
import time
from collections.abc import Iterable
from email.message import EmailMessage
from pathlib import Path

import httpx

from veil.devstack import mailbox

_CONCURRENCY = 4  # Argon2 hashing dominates a sign-up; more in flight only queues in the server
_MAIL_SECONDS = 60.0


class MailSinkReader:
    """The codes the sink holds, by recipient; files already read are not parsed again."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._seen: set[str] = set()
        self._codes: dict[str, list[str]] = {}

    def codes_for(self, address: str) -> list[str]:
        self._scan()
        return self._codes.get(address.lower(), [])

    def _scan(self) -> None:
        for path in sorted(self.directory.glob("*.eml")):
            if path.name in self._seen:
                continue
            self._seen.add(path.name)
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            code = mailbox.code_in(message)
            if code is not None:
                for _, address in email.utils.getaddresses([str(message["To"])]):
                    self._codes.setdefault(address.lower(), []).append(code)

    async def wait_for_codes(self, addresses: Iterable[str]) -> dict[str, str]:
        """The first code mailed to each of `addresses` (fresh ones: exactly one message each)."""
        wanted = [a.lower() for a in addresses]
        deadline = time.monotonic() + _MAIL_SECONDS
        while True:
            await asyncio.to_thread(self._scan)
            missing = [a for a in wanted if a not in self._codes]
            if not missing:
                return {a: self._codes[a][0] for a in wanted}
            if time.monotonic() > deadline:
                raise TimeoutError(f"no sign-up code in {self.directory} for {len(missing)} users")
            await asyncio.sleep(0.1)


async def sign_up(client: httpx.AsyncClient, mail_dir: Path, emails: list[str], password: str) -> None:
    """Verified accounts for `emails` (which must be new addresses)."""
    semaphore = asyncio.Semaphore(_CONCURRENCY)

    async def post(path: str, body: dict[str, str], status: int) -> None:
        async with semaphore:
            response = await client.post(path, json=body)
        if response.status_code != status:
            raise RuntimeError(f"{path} answered {response.status_code}: {response.text[:200]}")

    await asyncio.gather(
        *(post("/v1/auth/register", {"email": e, "password": password}, 202) for e in emails)
    )
    codes = await MailSinkReader(mail_dir).wait_for_codes(emails)
    await asyncio.gather(
        *(post("/v1/auth/register/verify", {"email": e, "code": codes[e.lower()]}, 201) for e in emails)
    )
