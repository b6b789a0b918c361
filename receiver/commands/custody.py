"""Custody commands: ``custody head | prove | consistency | log`` and ``audit``.

``custody consistency OLD_HEAD.json`` exits 1 when the older head is not a prefix of the current
log (forged, or the log was rewritten or truncated); ``audit`` exits 1 when it finds differences
between the database and the signed evidence, the object store and the custody log.
Failure posture: an unreadable or malformed head file is one line, exit 2; nothing changes
except the custody events for the reading itself.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from evidence.canonical import parse_json
from evidence.errors import EvidenceError
from receiver.commands import Context, bind, json_flag, show
from receiver.commands.access import operations
from receiver.errors import InvalidInputError

MAX_HEAD_BYTES = 1 << 20


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cus = sub.add_parser("custody", help="the custody log (Merkle tree, RFC 9162)")
    act = cus.add_subparsers(dest="action", required=True)
    ch = json_flag(act.add_parser("head", help="print the current signed tree head"))
    ch.add_argument("--fresh", action="store_true", help="sign a new head now")
    bind(ch, _head)
    cp = json_flag(act.add_parser("prove", help="prove that entry N is in the log"))
    cp.add_argument("index", type=int)
    bind(cp, _prove)
    cc = json_flag(
        act.add_parser("consistency", help="prove an older signed head is a prefix of the log")
    )
    cc.add_argument("old_head", type=Path, help="a tree head JSON file given out earlier")
    bind(cc, _consistency)
    cl = json_flag(act.add_parser("log", help="list custody entries"))
    cl.add_argument("--case", help="only the entries about this case")
    bind(cl, _log)
    bind(
        json_flag(
            sub.add_parser(
                "audit",
                help="re-derive the database from the signed records, the object store and "
                "the custody log, and name every difference",
            )
        ),
        _audit,
    )


def _head(args: argparse.Namespace, ctx: Context) -> int:
    head = operations(args, ctx).tree_head(fresh=args.fresh)
    if args.json:
        print(json.dumps(head, ensure_ascii=False, indent=2))
    else:
        print(f"tree size {head['tree_size']}, root {head['root']}")
        print(f"signed {head['utc']} by receiver key {head['log']}")
        print(f"anchors: {len(head['anchors'])} device chain head(s)")
    return 0


def _prove(args: argparse.Namespace, ctx: Context) -> int:
    proof = operations(args, ctx).prove_inclusion(args.index)
    if args.json:
        print(json.dumps(proof, ensure_ascii=False, indent=2))
    else:
        print(f"entry {proof['index']} of {proof['tree_size']}: {proof['entry']['kind']}")
        print(f"leaf hash {proof['leaf_hash']}")
        for i, p in enumerate(proof["proof"]):
            print(f"  path[{i}] {p}")
        print(f"root {proof['tree_head']['root']}")
    return 0


def _read_json(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_HEAD_BYTES + 1)
    except OSError as exc:
        raise InvalidInputError(str(path), exc.strerror or str(exc)) from exc
    if len(data) > MAX_HEAD_BYTES:
        raise InvalidInputError(str(path), "larger than a tree head can be")
    try:
        return parse_json(data)
    except (EvidenceError, RecursionError) as exc:
        raise InvalidInputError(str(path), f"not a tree head: {exc}") from exc


def _consistency(args: argparse.Namespace, ctx: Context) -> int:
    result = operations(args, ctx).prove_consistency(_read_json(args.old_head))
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print(_safe(("OK: " if result["ok"] else "FAILED: ") + result["explanation"]))
        for i, p in enumerate(result.get("proof", [])):
            print(f"  proof[{i}] {p}")
    return 0 if result["ok"] else 1


def _log(args: argparse.Namespace, ctx: Context) -> int:
    rows = operations(args, ctx).custody_entries(args.case)
    show(rows, args.json, ["index", "utc", "kind", "actor", "case", "session", "device", "detail"])
    return 0


def _safe(text: str) -> str:
    """Control characters (from a database an insider may have edited) shown, not obeyed."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _audit(args: argparse.Namespace, ctx: Context) -> int:
    result = operations(args, ctx).audit()
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        summary = ", ".join(f"{n} {k}" for k, n in sorted(result["checked"].items()))
        print(f"audit: checked {summary}: " + ("clean" if result["ok"] else "DIFFERENCES"))
        for f in result["findings"]:
            print(_safe(f"  {f['kind']}: {f['where']}: {f['detail']}"))
    return 0 if result["ok"] else 1
