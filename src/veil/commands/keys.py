"""`veil keys generate DIR`: the access-token signing keys (`jwt-keys.json`, for
VEIL_JWT_KEYS_FILE) and the key-transparency log keys (`transparency-keys.json`, for
VEIL_TRANSPARENCY_KEYS_FILE), as files the server loads at start. `--rotate` adds a new active key
to existing files (docs/adr/0007, docs/adr/0019); without it an existing file is never touched."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from veil.commands.output import Subcommands, fail, note
from veil.core.security.tokens import SigningKeys
from veil.transparency.head import LogKeys

# kind: (file name, variable, how to write one (path, previous), how to load one)
_KINDS: dict[str, tuple[str, str, Callable[[Path, Path | None], None], Callable[[Path], object]]] = {
    "token": ("jwt-keys.json", "VEIL_JWT_KEYS_FILE", SigningKeys.generate_file, SigningKeys.load),
    "log": ("transparency-keys.json", "VEIL_TRANSPARENCY_KEYS_FILE", LogKeys.generate_file, LogKeys.load),
}


def write_key_file(path: Path, generate: Callable[[Path, Path | None], None], *, rotate: bool) -> None:
    """A finished file appears at `path` or nothing does (mode 0600 from the first byte)."""
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    generate(draft, path if rotate else None)
    try:
        if rotate:
            draft.replace(path)
        else:
            os.link(draft, path)  # refuses to replace a file made meanwhile
    finally:
        draft.unlink(missing_ok=True)


def generate(args: argparse.Namespace) -> int:
    directory: Path = args.directory
    kinds = [args.only] if args.only else list(_KINDS)
    paths = {kind: directory / _KINDS[kind][0] for kind in kinds}
    if not args.rotate:
        exist = [
            f"{path} exists: `--rotate` adds a new active key to it"
            for path in paths.values()
            if path.exists()
        ]
        if exist:
            fail(*exist)
    else:
        missing = [
            f"{path} does not exist: nothing to rotate" for path in paths.values() if not path.exists()
        ]
        if missing:
            fail(*missing)
    directory.mkdir(parents=True, exist_ok=True)
    for kind, path in paths.items():
        _, variable, write, load = _KINDS[kind]
        try:
            write_key_file(path, write, rotate=args.rotate)
            load(path)
        except FileExistsError:
            fail(f"{path} was created meanwhile; left as it is")
        except (OSError, ValueError, KeyError) as exc:
            fail(f"{path}: {exc}")
        print(f"{variable}={path.resolve()}")
    note(
        "Keep these files secret: mode 0600, readable by the Veil processes only. Publish the log's"
        " public keys (`veil transparency keys FILE`) where clients and auditors find them."
    )
    if args.rotate:
        note("Restart every Veil process to sign with the new keys; the old ones still verify.")
    return 0


def add_parser(commands: Subcommands) -> None:
    keys = commands.add_parser("keys", help="signing keys for tokens and the key-transparency log")
    actions = keys.add_subparsers(dest="action", required=True)
    generator = actions.add_parser(
        "generate", help="write jwt-keys.json and transparency-keys.json in DIRECTORY; prints the variables"
    )
    generator.add_argument("directory", type=Path)
    generator.add_argument("--only", choices=list(_KINDS), help="one of the two files")
    generator.add_argument("--rotate", action="store_true", help="add a new active key to the existing files")
    generator.set_defaults(handler=generate)
