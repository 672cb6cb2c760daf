"""Output for scripts and for terminals: `--json` documents, and text from other people made safe
to print (a sender must not move the cursor, recolour or retitle the window with escape codes)."""

from __future__ import annotations

import json
import unicodedata
from typing import Any


def emit_json(value: Any) -> None:
    """One JSON document on standard output (what `--json` promises: nothing else is printed)."""
    print(json.dumps(value, indent=2, ensure_ascii=False))


def safe_text(text: str) -> str:
    """`text` with every control character shown as an escape, on one line."""
    return "".join(ascii(c)[1:-1] if unicodedata.category(c) in _UNSAFE else c for c in text)


# Control and format characters, unassigned and private ones, and line and paragraph separators.
_UNSAFE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
