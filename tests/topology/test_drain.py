"""SIGTERM to a messaging copy under load: it drains (exit 0), its sockets close with 1001 and
their clients reconnect through the gateway to the other copy without losing anything."""

from __future__ import annotations

import signal

from tests.support.gateway import Topology
from tests.topology.test_faults import run_fault


async def test_sigterm_under_load_drains_and_clients_move_to_the_other_copy(topology: Topology) -> None:
    _, receivers = await run_fault(topology, signal.SIGTERM)
    assert topology.services["messaging"][0].process.wait(30) == 0
    assert 1001 in [code for receiver in receivers for code in receiver.close_codes]
