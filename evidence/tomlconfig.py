"""One loader for every TOML file the project reads: a bounded read, then a strict mapping of
the table onto a tree of dataclasses.

Used by the agent's config (uplink section included), the receiver's config, the receiver's
holiday file and the provisioning self-test. It lives in :mod:`evidence` because that is the one
package every other one already depends on (and it is checked by strict mypy).

The mapping is driven by the dataclasses' type hints: ``str``, ``int``, ``float``, ``bool``,
:class:`~pathlib.Path`, ``list[X]``, ``dict[str, X]``, ``X | None`` and nested dataclasses.
A key missing from the file keeps its field's default. ``bool`` is not an ``int`` (and the other
way round); an ``int`` is accepted as a ``float``; an integer beyond 64 bits is refused, as
TOML says. A relative :class:`~pathlib.Path` is resolved against ``base`` when one is given
(the config file's directory). Range and cross-field rules stay with each config's owner.

(msgspec ignores unknown keys on dataclasses, pydantic's strict mode refuses a table for a
dataclass and its lax mode turns "5" into 5, cattrs turns a string into a list of characters: each
needed as much glue as this mapper is long, so it is our own.)

Failure posture: every refusal is a :class:`ConfigFileError` carrying the file, the dotted key
and a one-line reason; nothing is guessed, so a typo never falls back to a default. Only regular
files are read (a FIFO, device or directory is refused without blocking; a symbolic link is
followed, as /etc links are normal), at most :data:`MAX_CONFIG_BYTES`; TOML nested past Python's
recursion limit is refused like any other syntax error.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import stat
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

MAX_CONFIG_BYTES = 1 << 20
"""A config is a few kilobytes; anything bigger is a mistake, refused unread."""

_SCALARS: dict[type, str] = {str: "str", int: "int", float: "float", bool: "bool"}


class ConfigFileError(ValueError):
    """A TOML file that cannot be read, parsed or mapped. ``key`` is the dotted key ("" for the
    file as a whole); ``detail`` the reason, one line."""

    def __init__(self, source: str, key: str, detail: str) -> None:
        super().__init__(f"{source}: {key}: {detail}" if key else f"{source}: {detail}")
        self.source = source
        self.key = key
        self.detail = detail


def read_text(path: Path, *, max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """The UTF-8 text of the regular file ``path`` (links followed), at most ``max_bytes``."""
    source = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigFileError(source, "", "cannot read: file not found") from None
    except OSError as exc:
        raise ConfigFileError(source, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO, device or directory
            raise ConfigFileError(source, "", "cannot read: not a regular file")
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fh:
        try:
            data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise ConfigFileError(source, "", f"cannot read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise ConfigFileError(source, "", f"larger than {max_bytes} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigFileError(source, "", f"not UTF-8 text: {exc.reason}") from None


def parse(text: str, source: str) -> dict[str, Any]:
    """Parse TOML ``text``; a syntax error (or nesting too deep to parse) names ``source``."""
    try:
        return tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, or an integer of more than 4300 digits
        raise ConfigFileError(source, "", f"not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigFileError(source, "", "not valid TOML: nested too deeply") from None


def load(cls: type[T], path: Path, *, relative_to_file: bool = False) -> T:
    """Read ``path`` and map it onto ``cls``; relative paths against its directory if asked."""
    table = parse(read_text(path), str(path))
    base = Path(path).resolve().parent if relative_to_file else None
    return from_table(cls, table, source=str(path), base=base)


def from_table(cls: type[T], table: Any, *, source: str = "<dict>", base: Path | None = None) -> T:
    """Map a parsed TOML table onto the dataclass ``cls`` (missing keys keep their defaults)."""
    built: T = _Mapper(source, base).build(cls, table, "")
    return built


class _Mapper:
    def __init__(self, source: str, base: Path | None) -> None:
        self.source = source
        self.base = base

    def fail(self, key: str, detail: str) -> ConfigFileError:
        return ConfigFileError(self.source, key or "-", detail)

    def build(self, cls: Any, table: Any, key: str) -> Any:
        if not isinstance(table, dict):
            raise self.fail(key, f"expected a table, got {_shown(table)}")
        hints = _settable(cls)
        unknown = sorted((k for k in table if k not in hints), key=str)
        if unknown:
            known = ", ".join(sorted(hints))
            raise self.fail(_join(key, unknown[0]), f"unknown key (known: {known})")
        kwargs = {n: self.convert(hints[n], v, _join(key, n)) for n, v in table.items()}
        return cls(**kwargs)

    def convert(self, hint: Any, value: Any, key: str) -> Any:
        origin = typing.get_origin(hint)
        if dataclasses.is_dataclass(hint):
            return self.build(hint, value, key)
        if origin in (typing.Union, types.UnionType):
            return self.union(hint, value, key)
        if origin is list:
            (item,) = typing.get_args(hint)
            if not isinstance(value, list):
                raise self.fail(key, f"expected a list, got {_shown(value)}")
            return [self.convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        if origin is dict:
            _, item = typing.get_args(hint)
            if not isinstance(value, dict):
                raise self.fail(key, f"expected a table, got {_shown(value)}")
            return {k: self.convert(item, v, _join(key, k)) for k, v in value.items()}
        if hint is Path:
            if not isinstance(value, str):
                raise self.fail(key, f"expected a path string, got {_shown(value)}")
            path = Path(value)
            return self.base / path if self.base is not None and not path.is_absolute() else path
        return self.scalar(hint, value, key)

    def union(self, hint: Any, value: Any, key: str) -> Any:
        # TOML has no null: ``X | None`` only says the default may be None
        first: ConfigFileError | None = None
        for option in typing.get_args(hint):
            if option is type(None):
                continue
            try:
                return self.convert(option, value, key)
            except ConfigFileError as exc:
                first = first or exc
        raise first or self.fail(key, f"unsupported type {hint}")

    def scalar(self, hint: Any, value: Any, key: str) -> Any:
        if hint not in _SCALARS:
            raise self.fail(key, f"unsupported type {hint}")
        # bool is an int subclass: refuse true/false where a number is expected and vice versa
        if isinstance(value, bool) != (hint is bool):
            raise self.fail(key, f"expected {_SCALARS[hint]}, got {_shown(value)}")
        if hint is float and isinstance(value, int):
            return float(value)
        if not isinstance(value, hint):
            raise self.fail(key, f"expected {_SCALARS[hint]}, got {_shown(value)}")
        if hint is int and not -(2**63) <= value < 2**63:
            # TOML's integers are 64-bit; a bigger one is refused, not carried into the program
            raise self.fail(key, f"integer out of range: {_shown(value)}")
        return value


@functools.cache
def _settable(cls: type) -> dict[str, Any]:
    """The type of each field of ``cls`` that its constructor takes (annotations resolved once)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _join(prefix: str, name: object) -> str:
    shown = name if isinstance(name, str) and name.isprintable() else _shown(name)
    shown = _cut(shown)  # a hostile key stays one short line too
    return f"{prefix}.{shown}" if prefix else shown


def _shown(value: Any) -> str:
    """``repr`` of a refused value, cut short: a hostile megabyte string stays one short line."""
    if isinstance(value, int) and value.bit_length() > 200:
        return f"an integer of {value.bit_length()} bits"  # repr fails past 4300 digits
    return _cut(repr(value), f"... ({type(value).__name__})")


def _cut(text: str, tail: str = "...", limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + tail
