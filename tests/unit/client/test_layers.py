"""The client's layers import one way only: cli -> sdk -> protocol (see veil/client/__init__.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import veil.client

ROOT = Path(veil.client.__file__).parent
# What each layer may import from inside veil.client (itself included).
ALLOWED = {
    "protocol": {"protocol"},
    "sdk": {"sdk", "protocol"},
    "cli": {"cli", "sdk", "protocol"},
}


def _client_imports(path: Path) -> set[str]:
    layers: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[:2] == ["veil", "client"] and len(parts) > 2:
                layers.add(parts[2])
    return layers


def test_every_module_sits_in_a_layer_and_imports_only_downwards() -> None:
    modules = sorted(p for p in ROOT.rglob("*.py") if p.parent != ROOT)
    assert modules, "no client modules found"
    for path in modules:
        layer = path.relative_to(ROOT).parts[0]
        assert layer in ALLOWED, f"{path} is outside the three layers"
        wrong = _client_imports(path) - ALLOWED[layer]
        assert not wrong, f"{path.relative_to(ROOT)} ({layer}) imports {sorted(wrong)}"


def test_the_protocol_layer_does_no_io() -> None:
    forbidden = {"httpx", "websockets", "socket", "ssl", "pathlib", "tempfile", "subprocess"}
    for path in (ROOT / "protocol").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found = {node.module.split(".")[0]}
            else:
                continue
            assert not found & forbidden, f"{path.name} imports {sorted(found & forbidden)}"
