"""Fixtures for the client's cryptographic core: a key directory and four independent devices."""

from __future__ import annotations

import pytest

from tests.unit.client.support import Directory, new_device
from veil.client.protocol.session import ClientCrypto


@pytest.fixture
def directory() -> Directory:
    return Directory()


@pytest.fixture
def alice() -> ClientCrypto:
    return new_device()


@pytest.fixture
def bob() -> ClientCrypto:
    return new_device()


@pytest.fixture
def carol() -> ClientCrypto:
    return new_device()


@pytest.fixture
def eve() -> ClientCrypto:
    return new_device()
