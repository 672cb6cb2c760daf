"""Where the test run's private stack lives (`VEIL_TEST_DATA_DIR`, default `.data-test`).

Under pytest-xdist each worker has a stack of its own in a subdirectory (`.data-test/gw0`, ...):
its own PostgreSQL, S3 server and mail sink, so workers never read each other's mail or data.
"""

from __future__ import annotations

import os
from pathlib import Path


def test_data_dir() -> Path:
    base = Path(os.environ.get("VEIL_TEST_DATA_DIR", ".data-test")).resolve()
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return base / worker if worker else base


def test_mail_dir() -> Path:
    """The development mail sink's directory: sign-up and confirmation codes land here."""
    return test_data_dir() / "mail"
