"""``bodycam-verify``: check an evidence tree (device spool or case file) offline.

Exit status: 0 when everything verifies, 1 when any violation is found, 2 on usage or I/O errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path

from evidence.errors import EvidenceError
from evidence.keys import KeyRing
from evidence.verify import MediaDecryptor, Report, TreeError, verify_tree

EXIT_OK, EXIT_VIOLATIONS, EXIT_ERROR = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bodycam-verify",
        description="Verify a device spool or an exported case file: signatures, hash chain, "
        "media hashes, sessions and gaps. Reports every violation, not just the first.",
    )
    p.add_argument("path", type=Path, help="evidence directory (spool or case file)")
    p.add_argument(
        "--key",
        action="append",
        type=Path,
        default=[],
        metavar="PUBLIC_KEY_FILE",
        help="trusted device public key (PEM key or certificate); repeatable. Without any, the "
        "keys inside the tree are used (integrity only, not origin)",
    )
    p.add_argument(
        "--media-key",
        type=Path,
        metavar="PRIVATE_KEY_FILE",
        help="receiver's decryption key: also check the plaintext of encrypted media",
    )
    p.add_argument(
        "--receiver-key",
        action="append",
        type=Path,
        default=[],
        metavar="PUBLIC_KEY_FILE",
        help="receiver receipt key: media a device freed is accepted only against receipts "
        "signed with it; repeatable",
    )
    p.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from evidence import casefile  # hook: exported case files have their own checks

    if casefile.is_case_file(args.path):
        return casefile.run_cli(args.path, args.receiver_key, args.key, args.json)
    try:
        keyring = KeyRing.from_files(args.key) if args.key else None
        decryptor = _decryptor(args.media_key) if args.media_key else None
        receivers = KeyRing.from_files(args.receiver_key) if args.receiver_key else None
        report = verify_tree(args.path, keyring, decryptor=decryptor, receiver_keys=receivers)
    except TreeError as exc:
        print(f"bodycam-verify: cannot verify {exc.path}: {exc.reason}", file=sys.stderr)
        return EXIT_ERROR
    except EvidenceError as exc:
        print(f"bodycam-verify: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        print_report(report)
    return EXIT_OK if report.ok else EXIT_VIOLATIONS


def _decryptor(path: Path) -> MediaDecryptor:
    from evidence.decrypt import media_decryptor

    return media_decryptor(path)


def print_report(report: Report) -> None:
    out = sys.stdout
    for summary in report.devices.values():
        span = (
            f"seq {summary.first_seq}..{summary.last_seq}" if summary.first_seq is not None else "-"
        )
        out.write(
            f"device {summary.device}: {summary.records} records ({span}), "
            f"{summary.sessions} sessions, {summary.segments} segments, "
            f"{summary.media_bytes} media bytes"
            + (f", {summary.released} freed after receipts" if summary.released else "")
            + "\n"
        )
    for note in report.notes:
        out.write(f"note: {note}\n")
    if report.ok:
        out.write(f"OK: {report.root} verifies: no violations\n")
        return
    for v in report.violations:
        out.write(f"VIOLATION {v}\n")
    counts = Counter(str(v.kind) for v in report.violations)
    by_kind = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    out.write(f"FAILED: {len(report.violations)} violation(s): {by_kind}\n")


if __name__ == "__main__":
    sys.exit(main())
