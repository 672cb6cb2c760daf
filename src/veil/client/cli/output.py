"""Output for scripts and for terminals: `--json` documents, text from other people made safe to
print (a sender must not move the cursor, recolour or retitle the window with escape codes), and
files only their owner may read."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import unicodedata
from pathlib import Path
from typing import Any


def emit_json(value: Any) -> None:
    """One JSON document on standard output (what `--json` promises: nothing else is printed)."""
    print(json.dumps(value, indent=2, ensure_ascii=False))


def safe_text(text: str) -> str:
    """`text` with every control character shown as an escape, on one line."""
    return "".join(ascii(c)[1:-1] if unicodedata.category(c) in _UNSAFE else c for c in text)


# Control and format characters, unassigned and private ones, and line and paragraph separators.
_UNSAFE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by its owner only (exports hold personal data and message
    text). It is written to a new 0600 file beside `path` that then replaces it, so an existing
    file's wider mode or a symbolic link at `path` never decides who can read it, and a failure
    leaves the old file whole."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
