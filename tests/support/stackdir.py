"""Where the test run's private stack lives (`VEIL_TEST_DATA_DIR`, default `.data-test`)."""

from __future__ import annotations

import os
from pathlib import Path


def test_data_dir() -> Path:
    return Path(os.environ.get("VEIL_TEST_DATA_DIR", ".data-test")).resolve()


def test_mail_dir() -> Path:
    """The development mail sink's directory: sign-up and confirmation codes land here."""
    return test_data_dir() / "mail"
