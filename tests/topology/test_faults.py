"""Faults injected into the running topology: a messaging copy killed with SIGKILL, or stopped with
SIGTERM, while clients send (retrying with the same message_id) and receive (reconnecting through
the gateway). Afterwards every acknowledged message is stored exactly once and was delivered."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import asyncpg

from tests.support.gateway import Topology
from tests.support.traffic import Receiver, Sender
from tests.support.users import bearer, login, register

SENDS = 40


def group_with(topology: Topology, senders: int, receivers: int) -> tuple[list[Sender], list[dict[str, Any]]]:
    """A group whose owner is the first receiver; everyone has joined."""
    with topology.client() as client:
        members = [login(client, register(client)) for _ in range(senders + receivers)]
        owner = members[senders]
        created = client.post("/v1/conversations", json={"type": "group"}, headers=bearer(owner))
        cid = created.json()["conversation_id"]
        for member in members:
            if member is owner:
                continue
            client.post(
                f"/v1/conversations/{cid}/invitations",
                json={"user_id": member["user_id"]},
                headers=bearer(owner),
            )
            assert (
                client.post(f"/v1/conversations/{cid}/invitations/accept", headers=bearer(member)).status_code
                == 204
            )
        epoch = client.get(f"/v1/conversations/{cid}", headers=bearer(owner)).json()["epoch"]
    return [Sender(pair, cid, epoch) for pair in members[:senders]], members[senders:]


async def stored_once(database_url: str, message_ids: set[str]) -> dict[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            """SELECT message_id::text AS id, count(*) AS n FROM messages
               WHERE message_id::text = ANY($1::text[]) GROUP BY 1""",
            list(message_ids),
        )
    finally:
        await conn.close()
    return {row["id"]: row["n"] for row in rows}


async def run_fault(topology: Topology, fault: signal.Signals) -> tuple[list[Sender], list[Receiver]]:
    senders, receiving = group_with(topology, senders=3, receivers=2)
    receivers = [Receiver(topology, pair) for pair in receiving]
    tasks = []
    for receiver in receivers:  # one after the other: round robin puts one on each copy
        tasks.append(asyncio.create_task(receiver.run()))
        await asyncio.wait_for(receiver.connected.wait(), 10)
    victim = topology.services["messaging"][0].process
    async with topology.async_client() as client:
        sending = [asyncio.create_task(sender.send(client, SENDS)) for sender in senders]
        while sum(len(s.acknowledged) for s in senders) < SENDS:  # noqa: ASYNC110 - a third of the way in
            await asyncio.sleep(0.01)
        victim.send_signal(fault)
        await asyncio.gather(*sending)
    acknowledged = set().union(*(s.acknowledged for s in senders))
    try:
        for receiver in receivers:
            await receiver.wait_for(acknowledged, timeout=30)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert len(acknowledged) == 3 * SENDS
    counts = await stored_once(topology.database_url, acknowledged)
    assert set(counts) == acknowledged and set(counts.values()) == {1}
    return senders, receivers


async def test_sigkill_of_a_messaging_copy_loses_no_acknowledged_message(topology: Topology) -> None:
    _, receivers = await run_fault(topology, signal.SIGKILL)
    assert topology.services["messaging"][0].process.wait(5) == -signal.SIGKILL
    # The copy held one of the sockets: its receiver lost the connection and came back.
    assert any(receiver.close_codes for receiver in receivers)
