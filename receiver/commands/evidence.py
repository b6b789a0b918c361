"""Evidence commands: ``quarantine``, ``import`` (a card copy) and ``reverify``.

Failure posture: ``import`` and ``reverify`` exit 1 when some records were refused or problems
were found, and report each one; nothing is changed by a failed check.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from receiver import reports
from receiver.commands import Context, bind, json_flag, show
from receiver.identity import load_media_key, load_receipt_key

if TYPE_CHECKING:
    from receiver.importer import ImportedRecord


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bind(
        json_flag(
            sub.add_parser(
                "quarantine", help="what failed verification, and what waits for a fix (and why)"
            )
        ),
        _quarantine,
        read_only=True,
    )
    bind(
        json_flag(sub.add_parser("reverify", help="re-verify the whole store")),
        _reverify,
        read_only=True,
    )
    imp = json_flag(
        sub.add_parser(
            "import", help="file a spool copy (e.g. from a card) with the checks of a dock upload"
        )
    )
    imp.add_argument("spool", type=Path, help="the spool directory (its devices/ tree)")
    bind(imp, _import)


def _quarantine(args: argparse.Namespace, ctx: Context) -> int:
    rows = reports.quarantine_view(ctx.conn) + reports.waiting_view(ctx.conn)
    if not args.json:
        rows = [
            {**r, "reason": f"waiting: {r['reason']}"} if r["status"] == "waiting" else r
            for r in rows
        ]
    show(rows, args.json, ["id", "device", "seq", "type", "reason", "when"])
    return 0


def _import(args: argparse.Namespace, ctx: Context) -> int:
    from receiver.importer import DUPLICATE, STORED, import_spool
    from receiver.ingest import Ingest

    config = ctx.config
    ingest = Ingest(
        ctx.store,
        ctx.conn,
        load_receipt_key(config.receipt_key_path),
        limits=config.limits,
        dock_registry=config.dock_registry,
        encryption_key=load_media_key(config.encryption_key),
    )
    # the per-record log lines repeat what is printed below: kept for -v only
    quiet = [logging.getLogger(n) for n in ("receiver.ingest", "receiver.importer")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.DEBUG if args.verbose else logging.ERROR)
    try:
        results = import_spool(ingest, args.spool)
    finally:
        ingest.close()
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], ensure_ascii=False, indent=2))
    else:
        print(_import_text(args.spool, results))
    return 0 if all(r.outcome in (STORED, DUPLICATE) for r in results) else 1


def _import_text(spool: Path, results: list[ImportedRecord]) -> str:
    """One line per refused record, except that records waiting for the same reason (e.g. an
    unregistered device) are one line with what to do: a card copy is not resent by a device."""
    from receiver.importer import DUPLICATE, STORED, WAITING

    lines = []
    waiting: dict[tuple[str, str], list[ImportedRecord]] = {}
    for r in results:
        if r.outcome == WAITING:
            waiting.setdefault((r.device, r.reason or ""), []).append(r)
        elif r.outcome not in (STORED, DUPLICATE):
            lines.append(f"  {r.outcome.upper()} {r.device} seq {r.seq} ({r.file}): {r.reason}")
    for (device, reason), rows in waiting.items():
        seqs = f"seq {rows[0].seq}" + (f"..{rows[-1].seq}" if len(rows) > 1 else "")
        lines.append(f"  NOT IMPORTED {len(rows)} record(s) of {device} ({seqs}): {reason}")
        if "not registered" in reason:
            lines.append(
                f"    register the device first (bodycam-receiver device add --id {device} "
                "--key SIGNING.pub, or enrol it with bodycam-provision), then import this "
                "copy again"
            )
        else:
            lines.append("    fix the cause above, then import this copy again")
    counts = {o: sum(r.outcome == o for r in results) for o in {r.outcome for r in results}}
    # a card copy is not resent by anyone: what waits for a fix is simply not imported
    label = {WAITING: "not imported"}
    summary = ", ".join(f"{n} {label.get(o, o)}" for o, n in sorted(counts.items())) or "no records"
    return "\n".join([*lines, f"imported {spool}: {summary}"])


def _reverify(args: argparse.Namespace, ctx: Context) -> int:
    decryptor = None
    if ctx.config.encryption_key is not None:
        from evidence.decrypt import media_decryptor

        decryptor = media_decryptor(ctx.config.encryption_key)
    result = reports.reverify(ctx.store, ctx.conn, decryptor=decryptor)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print(
            f"{result['records']} records, {result['objects']} objects, "
            f"{result['quarantined']} quarantined: "
            + ("all verified" if result["ok"] else "PROBLEMS")
        )
        for v in result["violations"]:
            print(f"  {v['kind']}: device {v['device']} seq {v['seq']}: {v['detail']}")
        for o in result["bad_objects"]:
            print(f"  object {o['object']} now hashes to {o['actual_sha256']}")
    return 0 if result["ok"] else 1
