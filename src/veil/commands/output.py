"""How every subcommand talks to the operator: results on stdout, one line per problem on stderr
prefixed with `veil:`, and `--json` for the listings."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from typing import NoReturn, TypeAlias

from pydantic import BaseModel

# What `add_parser` adds a subcommand to.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class Failed(Exception):
    """A problem to report on one line of stderr each, exiting with status 1."""

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def fail(*problems: str) -> NoReturn:
    raise Failed(*problems)


def report_problems(problems: Iterable[str]) -> None:
    for problem in problems:
        # A value from the environment may hold a newline: one problem stays one line.
        print("veil: " + " ".join(problem.split()), file=sys.stderr)


def note(text: str) -> None:
    """What happened, for the person at the terminal (stderr: stdout stays the result)."""
    print(text, file=sys.stderr)


def print_json(model: BaseModel) -> None:
    print(json.dumps(model.model_dump(mode="json"), indent=2))
