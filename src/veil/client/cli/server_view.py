"""What the server holds, read from underneath it: a `messages` row, an `attachments` row and the
stored object, exactly as an operator (or a thief of the disks) would see them. For `make demo`.

The stores are found the way `veil run` finds them, without starting anything: `DATABASE_URL` and
`S3_ENDPOINT` with its credentials from the environment (or `.env`) if set; otherwise the embedded
development servers under the data directory (`VEIL_DATA_DIR`, default `.data`): PostgreSQL's socket
from `postgres/`, the S3 port from `s3/ports.json`, its keys from `secrets.env`.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import boto3
from botocore.config import Config

from veil.core.config import load_settings
from veil.devstack.postgres import EmbeddedPostgres
from veil.devstack.s3 import EmbeddedS3
from veil.devstack.stack import DATABASE_NAME


class StoresUnavailable(RuntimeError):
    """The database or the object store of the running system cannot be found."""


@dataclass(frozen=True)
class Stores:
    database_url: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    s3_bucket: str
    s3_region: str

    @classmethod
    def locate(cls) -> Stores:
        settings = load_settings()
        data_dir = settings.data_dir.resolve()
        if settings.database_url is not None:
            database_url = settings.database_url.get_secret_value()
        else:
            postgres = EmbeddedPostgres(data_dir / "postgres")
            if postgres.pid is None:
                raise StoresUnavailable(f"no development PostgreSQL runs under {data_dir / 'postgres'}")
            database_url = postgres.url(DATABASE_NAME)
        if settings.s3_endpoint is not None:
            if settings.s3_access_key is None or settings.s3_secret_key is None:
                raise StoresUnavailable("S3_ENDPOINT is set without S3_ACCESS_KEY and S3_SECRET_KEY")
            endpoint = settings.s3_endpoint
            access_key = settings.s3_access_key.get_secret_value()
            secret_key = settings.s3_secret_key.get_secret_value()
        else:
            keys = _read_env_file(data_dir / "secrets.env")
            if "S3_ACCESS_KEY" not in keys or "S3_SECRET_KEY" not in keys:
                raise StoresUnavailable(f"no development S3 credentials in {data_dir / 'secrets.env'}")
            access_key, secret_key = keys["S3_ACCESS_KEY"], keys["S3_SECRET_KEY"]
            s3 = EmbeddedS3(data_dir / "s3", access_key, secret_key, settings.s3_bucket)
            if s3.pid is None:
                raise StoresUnavailable(f"no development S3 server runs under {data_dir / 's3'}")
            endpoint = s3.endpoint
        return cls(database_url, endpoint, access_key, secret_key, settings.s3_bucket, settings.s3_region)

    # Database ----------------------------------------------------------------------------------

    def message_row(self, conversation_id: str, seq: int) -> dict[str, Any]:
        return self._one_row(
            "SELECT * FROM messages WHERE conversation_id = $1 AND seq = $2", uuid.UUID(conversation_id), seq
        )

    def attachment_row(self, attachment_id: str) -> dict[str, Any]:
        return self._one_row("SELECT * FROM attachments WHERE id = $1", uuid.UUID(attachment_id))

    def _one_row(self, sql: str, *args: object) -> dict[str, Any]:
        async def fetch() -> dict[str, Any]:
            conn = await asyncpg.connect(self.database_url, timeout=10)
            try:
                row = await conn.fetchrow(sql, *args)
            finally:
                await conn.close()
            if row is None:
                raise StoresUnavailable("the row is not in the database the server uses")
            return dict(row.items())

        return asyncio.run(fetch())

    # Object store ------------------------------------------------------------------------------

    def read_object(self, key: str) -> bytes:
        """The stored bytes of one (small) object, fetched with the server's own credentials."""
        client = boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id=self.s3_access_key,
            aws_secret_access_key=self.s3_secret_key,
            region_name=self.s3_region,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, connect_timeout=5),
        )
        try:
            body: bytes = client.get_object(Bucket=self.s3_bucket, Key=key)["Body"].read()
        finally:
            client.close()
        return body


def _read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (read only: unlike the dev stack, this never creates credentials)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}
