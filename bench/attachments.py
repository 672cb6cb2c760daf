"""Attachment scenarios for `make bench`.

(a) reservations: concurrent clients each reserving uploads (`POST /v1/attachments`: membership
    check, quota check under a per-owner lock, one insert, a store ping and a SigV4 presign);
(b) presigning alone, in-process (the CPU cost of one presigned PUT);
(c) transfers: ciphertext uploaded with the presigned PUTs and downloaded with presigned GETs,
    straight between the load generator and the S3 server (Veil is not in the data path);
(d) the reference client's chunked AES-256-GCM file encryption, in-process.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tests.support.server import LiveServer

from bench.messaging import Latencies, RawHttpClient, _auth, _users
from veil.client.protocol.attachments import encrypt_file
from veil.core.blobstore import BlobStore
from veil.core.config import Settings

MiB = 1024 * 1024


@dataclass
class Throughput:
    name: str
    count: int
    seconds: float
    latencies: Latencies
    mib: float = 0.0

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    @property
    def mib_per_second(self) -> float:
        return self.mib / self.seconds


def _reservation(conversation_id: str, size: int) -> bytes:
    digest = base64.b64encode(hashlib.sha256(os.urandom(8)).digest()).decode()
    return f'{{"conversation_id":"{conversation_id}","size":{size},"sha256":"{digest}"}}'.encode()


async def _direct_pairs(
    client: httpx.AsyncClient, count: int, mail_dir: Path
) -> list[tuple[dict[str, Any], str]]:
    users = await _users(client, 2 * count, mail_dir)
    pairs = []
    for owner, peer in zip(users[::2], users[1::2], strict=True):
        response = await client.post(
            "/v1/conversations", json={"type": "direct", "member_id": peer["user_id"]}, headers=_auth(owner)
        )
        response.raise_for_status()
        pairs.append((owner, str(response.json()["conversation_id"])))
    return pairs


async def reservations(server: LiveServer, clients: int, seconds: float, mail_dir: Path) -> Throughput:
    async with server.async_client() as client:
        pairs = await _direct_pairs(client, clients, mail_dir)
    context = server.ssl_context()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(owner: dict[str, Any], conversation_id: str) -> None:
        http = RawHttpClient(server.port, context)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                body = _reservation(conversation_id, 4096)
                status = await http.post("/v1/attachments", body, owner["access_token"])
                if status != 201:
                    raise RuntimeError(f"reservation answered {status}")
                latencies.append(time.perf_counter() - started)
        finally:
            await http.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker(owner, cid) for owner, cid in pairs))
    elapsed = time.perf_counter() - began
    return Throughput(f"(a) reservations, {clients} clients", len(latencies), elapsed, Latencies(latencies))


def presigning(settings: Settings, count: int = 3000) -> Throughput:
    assert settings.s3_endpoint and settings.s3_access_key and settings.s3_secret_key
    blobs = BlobStore(
        settings.s3_endpoint,
        settings.s3_access_key.get_secret_value(),
        settings.s3_secret_key.get_secret_value(),
        bucket=settings.s3_bucket,
        region=settings.s3_region,
        timeout=5,
    )
    digest = hashlib.sha256(b"x").digest()
    latencies = []
    try:
        began = time.perf_counter()
        for i in range(count):
            started = time.perf_counter()
            blobs.presign_put(f"bench-{i}", 4096, digest, 900)
            latencies.append(time.perf_counter() - started)
        elapsed = time.perf_counter() - began
    finally:
        blobs.close()
    return Throughput("(b) presigned PUTs, in-process", count, elapsed, Latencies(latencies))


async def transfers(
    server: LiveServer, files: int, size_mib: int, concurrency: int, mail_dir: Path
) -> tuple[Throughput, Throughput]:
    """Upload `files` objects of `size_mib` through presigned PUTs, `concurrency` at a time, then
    download them all through presigned GETs."""
    body = os.urandom(size_mib * MiB)
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    async with server.async_client() as api:
        [(owner, conversation_id)] = await _direct_pairs(api, 1, mail_dir)
        reserved = []
        for _ in range(files):
            response = await api.post(
                "/v1/attachments",
                json={"conversation_id": conversation_id, "size": len(body), "sha256": digest},
                headers=_auth(owner),
            )
            response.raise_for_status()
            reserved.append(response.json())
        semaphore = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(timeout=120) as store:

            async def put(reservation: dict[str, Any]) -> float:
                async with semaphore:
                    upload = reservation["upload"]
                    started = time.perf_counter()
                    response = await store.put(upload["url"], content=body, headers=upload["headers"])
                    response.raise_for_status()
                    return time.perf_counter() - started

            began = time.perf_counter()
            put_times = await asyncio.gather(*(put(r) for r in reserved))
            put_elapsed = time.perf_counter() - began
            urls = []
            for reservation in reserved:
                attachment = reservation["attachment_id"]
                done = await api.post(f"/v1/attachments/{attachment}/complete", headers=_auth(owner))
                done.raise_for_status()
                got = await api.get(f"/v1/attachments/{attachment}", headers=_auth(owner))
                urls.append(got.json()["download"]["url"])

            async def get(url: str) -> float:
                async with semaphore:
                    started = time.perf_counter()
                    response = await store.get(url)
                    response.raise_for_status()
                    if len(response.content) != len(body):
                        raise RuntimeError("short download")
                    return time.perf_counter() - started

            began = time.perf_counter()
            get_times = await asyncio.gather(*(get(url) for url in urls))
            get_elapsed = time.perf_counter() - began
            for reservation in reserved:
                await api.delete(f"/v1/attachments/{reservation['attachment_id']}", headers=_auth(owner))
    label = f"{files} x {size_mib} MiB, {concurrency} at a time"
    total = files * size_mib
    return (
        Throughput(f"(c) upload {label}", files, put_elapsed, Latencies(list(put_times)), total),
        Throughput(f"(c) download {label}", files, get_elapsed, Latencies(list(get_times)), total),
    )


def client_encryption(size_mib: int = 50) -> Throughput:
    plaintext = io.BytesIO(os.urandom(size_mib * MiB))

    class Discard(io.RawIOBase):
        def write(self, data: Any) -> int:
            return len(data)

    began = time.perf_counter()
    encrypt_file(plaintext, Discard())  # type: ignore[arg-type]
    elapsed = time.perf_counter() - began
    return Throughput(f"(d) client encryption of {size_mib} MiB", 1, elapsed, Latencies([elapsed]), size_mib)


def render(results: list[Throughput]) -> str:
    rows = []
    for r in results:
        throughput = f"{r.mib_per_second:.0f} MiB/s" if r.mib else f"{r.rate:,.0f}/s"
        rows.append(
            f"| {r.name} | {throughput} | {r.count} | {r.latencies.pct(0.5):.1f} | "
            f"{r.latencies.pct(0.95):.1f} | {r.latencies.pct(0.99):.1f} |"
        )
    table = "\n".join(rows)
    return f"""
## Attachments
| scenario | throughput | operations | p50 ms | p95 ms | p99 ms |
|---|---|---|---|---|---|
{table}

(a) is the Veil server's work per file: a reservation (membership, quota under a per-owner lock,
one insert, one SigV4 presign) over TLS, closed loop; (b) is the presign alone;
(c) moves ciphertext between the load generator and SeaweedFS directly, so it measures the store
and loopback, not Veil, which never touches file bytes (latency is per file); (d) is the reference
client's AES-256-GCM in 64 KiB chunks on one core.
"""


async def run_all(server: LiveServer, settings: Settings, seconds: float) -> str:
    mail_dir = settings.data_dir / "mail"
    results = [
        await reservations(server, clients=16, seconds=seconds, mail_dir=mail_dir),
        presigning(settings),
    ]
    for concurrency in (1, 4):
        results.extend(
            await transfers(server, files=8, size_mib=8, concurrency=concurrency, mail_dir=mail_dir)
        )
    results.append(client_encryption())
    return render(results)
