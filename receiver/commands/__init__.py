"""The clerk's commands of ``bodycam-receiver``, one module per subject.

Each module has ``add_commands(sub)``, which adds its sub-commands to the top-level parser and
binds each to a handler with :func:`bind`. A handler takes the parsed arguments and a
:class:`Context` and returns the exit status. The dispatcher in :mod:`receiver.cli` opens the
data directory once (creating it only for commands that write) and closes it afterwards.

Failure posture: handlers raise :class:`receiver.errors.ReceiverError` (or an evidence error) for
anything a user can cause; :mod:`receiver.cli` prints it as one line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from receiver import reports
from receiver.config import ReceiverConfig
from receiver.store import EvidenceStore


@dataclass
class Context:
    """What a handler works on: the configuration, the object store and the open database."""

    config: ReceiverConfig
    store: EvidenceStore
    conn: sqlite3.Connection


Handler = Callable[[argparse.Namespace, Context], int]
RawHandler = Callable[[argparse.Namespace, ReceiverConfig], int]


def bind(parser: argparse.ArgumentParser, handler: Handler, *, read_only: bool = False) -> None:
    """Run ``handler`` for this sub-command; ``read_only`` commands never create a data dir."""
    parser.set_defaults(handler=handler, read_only=read_only, raw=False)


def bind_raw(parser: argparse.ArgumentParser, handler: RawHandler) -> None:
    """Run ``handler`` with the configuration only (no database opened), e.g. the service."""
    parser.set_defaults(handler=handler, read_only=False, raw=True)


def json_flag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def show(rows: Any, as_json: bool, columns: Sequence[str] = ()) -> None:
    """Print rows as JSON or as an aligned table of ``columns``."""
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
    else:
        print(reports.table(rows, columns))
