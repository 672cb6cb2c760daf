"""Fixtures shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clients import Clients
from tests.support.server import LiveServer


@pytest.fixture
def clients(api: LiveServer, tmp_path: Path) -> Iterator[Clients]:
    made = Clients(api, tmp_path)
    try:
        yield made
    finally:
        made.close()
