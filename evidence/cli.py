"""``bodycam-verify``: check an evidence tree (device spool or case file) offline.

Exit status: 0 when everything verifies, 1 when any violation is found, 2 on usage or I/O errors
and on any internal error (one line on stderr, never a traceback). Every text written is
escaped: control and format characters from the tree (a newline in a file name, an escape
sequence in a detail) are shown as ``\\xNN``/``\\uNNNN`` and cannot forge a line or move the
cursor.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections import Counter
from pathlib import Path
from typing import TextIO

from evidence.errors import EvidenceError
from evidence.keys import KeyRing
from evidence.verify import MediaDecryptor, Report, TreeError, verify_tree

EXIT_OK, EXIT_VIOLATIONS, EXIT_ERROR = 0, 1, 2
# C0 and C1 controls, DEL, and the Unicode format/separator characters that reorder or hide
# text (bidi overrides, zero-width, line/paragraph separators).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")


def escape(text: object) -> str:
    """``text`` with every control/format character replaced by a visible escape."""

    def sub(m: re.Match[str]) -> str:
        code = ord(m.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _UNSAFE.sub(sub, str(text))


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
        "signed with it (without it, freed media is reported as unverified-receipt); repeatable",
    )
    p.add_argument(
        "--workers", type=int, default=None, help="hashing threads (default: one per CPU)"
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
    try:
        report = _run(args)
    except TreeError as exc:
        _error(f"cannot verify {exc.path}: {exc.reason}")
        return EXIT_ERROR
    except (EvidenceError, OSError) as exc:
        _error(str(exc))
        return EXIT_ERROR
    except Exception as exc:  # the one place a bug must still not become a traceback
        _error(f"internal error ({type(exc).__name__}): {exc}")
        return EXIT_ERROR
    if args.json:
        sys.stdout.write(escape_json(json.dumps(report.to_dict(), indent=2, ensure_ascii=False)))
        sys.stdout.write("\n")
    else:
        print_report(report)
    return EXIT_OK if report.ok else EXIT_VIOLATIONS


def _run(args: argparse.Namespace) -> Report:
    keyring = KeyRing.from_files(args.key) if args.key else None
    decryptor = _decryptor(args.media_key) if args.media_key else None
    receivers = KeyRing.from_files(args.receiver_key) if args.receiver_key else None
    return verify_tree(
        args.path, keyring, decryptor=decryptor, receiver_keys=receivers, workers=args.workers
    )


def _error(message: str) -> None:
    line = " ".join(message.split("\n"))
    sys.stderr.write(f"bodycam-verify: {escape(line)[:2000]}\n")


def escape_json(text: str) -> str:
    """JSON text with the characters :func:`escape` hides written as ``\\uNNNN`` (still JSON:
    they can only occur inside strings)."""
    return _UNSAFE.sub(
        lambda m: m.group() if m.group() == "\n" else f"\\u{ord(m.group()):04x}", text
    )


def _decryptor(path: Path) -> MediaDecryptor:
    from evidence.decrypt import media_decryptor

    return media_decryptor(path)


def print_report(report: Report, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    for summary in report.devices.values():
        span = (
            f"seq {summary.first_seq}..{summary.last_seq}" if summary.first_seq is not None else "-"
        )
        out.write(
            escape(
                f"device {summary.device}: {summary.records} records ({span}), "
                f"{summary.sessions} sessions, {summary.segments} segments, "
                f"{summary.media_bytes} media bytes"
                + (f", {summary.released} freed after receipts" if summary.released else "")
            )
            + "\n"
        )
    for note in report.notes:
        out.write(f"note: {escape(note)}\n")
    if report.ok:
        out.write(f"OK: {escape(report.root)} verifies: no violations\n")
        return
    for v in report.violations:
        out.write(f"VIOLATION {escape(v)}\n")
    counts = Counter(str(v.kind) for v in report.violations)
    by_kind = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    out.write(f"FAILED: {len(report.violations)} violation(s): {by_kind}\n")


if __name__ == "__main__":
    sys.exit(main())
