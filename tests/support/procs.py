"""What a server's processes hold, read from /proc (Linux): their children and their TCP sockets."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_LISTEN, _ESTABLISHED = "0A", "01"


@dataclass(frozen=True)
class TcpSocket:
    local_port: int
    remote_port: int
    state: str

    @property
    def listening(self) -> bool:
        return self.state == _LISTEN


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found.update(int(child) for child in (task / "children").read_text().split())
        except FileNotFoundError:
            continue
    return found


def tcp_sockets(pid: int) -> list[TcpSocket]:
    """The TCP sockets the process has open (both address families), empty once it is gone."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except FileNotFoundError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except FileNotFoundError:
        return []
    if not inodes:
        return []
    sockets = []
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except FileNotFoundError:  # it died meanwhile (a zombie has no network tables)
            return []
        for line in lines:
            fields = line.split()
            if fields[9] in inodes:
                local, remote = fields[1], fields[2]
                sockets.append(
                    TcpSocket(int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16), fields[3])
                )
    return sockets
