"""Export command: ``export CASE --out PATH [--zip]`` writes the case file (needs approval).

Failure posture: refused without a granted export approval (logged, exit 2); the output is
built in a temporary sibling and renamed into place only when complete, so a failed export
leaves nothing behind; an existing ``--out`` is never overwritten.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from receiver.commands import Context, bind, json_flag
from receiver.commands.access import operations


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ex = json_flag(sub.add_parser("export", help="export a case file (with approval)"))
    ex.add_argument("case", help="the case number")
    ex.add_argument("--out", required=True, type=Path, help="new directory (or .zip with --zip)")
    ex.add_argument("--zip", action="store_true", help="write one zip file instead")
    bind(ex, _export)


def _export(args: argparse.Namespace, ctx: Context) -> int:
    result = operations(args, ctx).export_case(args.case, args.out, as_zip=args.zip)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print(
            f"case {args.case} exported to {result['path']}: {result['files']} files, "
            f"{result['sessions']} sessions, custody tree head {result['tree_size']}"
        )
        print(f"verify it anywhere: bodycam-verify {result['path']}")
    return 0
