"""The development stack: whatever of PostgreSQL, S3 and SMTP the configuration does not point at is
started privately under the data directory, and the settings are completed with their addresses.

Two data directories give two independent stacks (`make run` and `make test` side by side): the
servers' files, sockets and ports all follow the data directory. Development credentials are made
once, at random, and kept in `<data_dir>/secrets.env`, `<data_dir>/jwt-keys.json` and
`<data_dir>/transparency-keys.json`; none is in the repository.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from pydantic import SecretStr

from veil.core.config import Settings
from veil.core.security.tokens import SigningKeys
from veil.devstack.mailsink import MailSink
from veil.devstack.postgres import EmbeddedPostgres
from veil.devstack.s3 import EmbeddedS3
from veil.transparency.head import ensure_keys_file

DATABASE_NAME = "veil"


@dataclass
class DevStack:
    settings: Settings
    postgres: EmbeddedPostgres | None
    s3: EmbeddedS3 | None
    mail: MailSink | None = None

    def stop(self) -> None:
        """Stop what this stack started, S3 first (it takes longest), then PostgreSQL."""
        if self.mail is not None:
            self.mail.stop()
        if self.s3 is not None:
            self.s3.stop()
        if self.postgres is not None:
            self.postgres.stop()


def dev_secrets(data_dir: Path) -> dict[str, str]:
    """Random credentials for the private S3 server, made on first use and then reused."""
    path = data_dir / "secrets.env"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(
            f"S3_ACCESS_KEY=veil-{secrets.token_hex(8)}\nS3_SECRET_KEY={secrets.token_urlsafe(32)}\n"
        )
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def dev_signing_keys(data_dir: Path) -> Path:
    """The development access-token signing keys, made on first use."""
    path = data_dir / "jwt-keys.json"
    if not path.exists():
        SigningKeys.generate_file(path)
    return path


def dev_transparency_keys(data_dir: Path) -> Path:
    """The development key-transparency log keys, made on first use."""
    return ensure_keys_file(data_dir / "transparency-keys.json")


async def ensure_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def start_dev_stack(settings: Settings) -> DevStack:
    if settings.is_production:
        raise RuntimeError("the development stack never runs in production")
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    updates: dict[str, object] = {}
    postgres = s3 = None
    mail = None
    try:
        if settings.uses_embedded_postgres:
            postgres = EmbeddedPostgres(data_dir / "postgres")
            postgres.start()
            await ensure_database(postgres.url("postgres"), DATABASE_NAME)
            updates["database_url"] = SecretStr(postgres.url(DATABASE_NAME))
        if settings.uses_embedded_s3:
            creds = dev_secrets(data_dir)
            s3 = EmbeddedS3(
                data_dir / "s3", creds["S3_ACCESS_KEY"], creds["S3_SECRET_KEY"], settings.s3_bucket
            )
            updates["s3_endpoint"] = s3.start()
            updates["s3_access_key"] = SecretStr(creds["S3_ACCESS_KEY"])
            updates["s3_secret_key"] = SecretStr(creds["S3_SECRET_KEY"])
        if settings.uses_mail_sink:
            mail = MailSink(data_dir / "mail")
            updates["smtp_port"] = mail.start()
            updates["smtp_host"] = "127.0.0.1"
            updates["smtp_starttls"] = False
        if settings.jwt_keys_file is None:
            updates["jwt_keys_file"] = dev_signing_keys(data_dir)
        if settings.transparency_keys_file is None:
            updates["transparency_keys_file"] = dev_transparency_keys(data_dir)
    except BaseException:
        DevStack(settings, postgres, s3, mail).stop()
        raise
    return DevStack(settings.model_copy(update=updates), postgres, s3, mail)
