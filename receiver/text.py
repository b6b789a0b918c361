"""Text from devices made safe for a terminal, a log line or a one-line report.

Device-supplied strings (session ids, notes, reasons quoting a record, file names) may hold
escape sequences that drive a terminal (clear the clerk's screen, rewrite a line) or newlines
that forge a line of a report. :func:`escape` shows every C0/C1 control character and DEL as
``\\xNN``; :class:`SafeStream` shows them as ``\\uNNNN`` in everything the CLI prints (its
own line breaks and tabs kept; ``--json`` output stays valid JSON). Failure posture: pure
functions, never raise.
"""

from __future__ import annotations

import re
from typing import TextIO

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LAYOUT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _hex(m: re.Match[str]) -> str:
    return f"\\x{ord(m.group()):02x}"


def escape(text: str) -> str:
    """``text`` with every control character (newlines too) shown as ``\\xNN``."""
    return _CONTROL.sub(_hex, text)


class SafeStream:
    """A text stream wrapper that escapes control characters other than newline and tab."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner

    def write(self, text: str) -> int:
        # \u form: valid inside a JSON string too (--json output stays parseable)
        self.inner.write(_CONTROL_BUT_LAYOUT.sub(lambda m: f"\\u{ord(m.group()):04x}", text))
        return len(text)

    def flush(self) -> None:
        self.inner.flush()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)
