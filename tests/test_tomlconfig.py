"""The one TOML loader (evidence.tomlconfig) and every front end that uses it: the agent, the
receiver, the holiday file and the device self-test. Hostile files get one line, never a
traceback and never a hang."""

from __future__ import annotations

import os
import string
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.cli import main as agent_main
from agent.config import AgentConfig, config_from_dict, load_config
from agent.errors import AgentConfigError
from evidence import tomlconfig
from evidence.tomlconfig import ConfigFileError, from_table
from provisioning.configs import render_agent_config
from provisioning.errors import MaterialError
from provisioning.selftest import load_material
from receiver.cli import main as receiver_main
from receiver.compliance.calendar import load_holiday_file
from receiver.compliance.errors import HolidayFileError
from receiver.config import ReceiverConfig
from receiver.config import load_config as load_receiver_config
from receiver.errors import ReceiverConfigError


@dataclass
class Leaf:
    n: int = 1
    x: float = 0.5
    flag: bool = False
    name: str = "d"
    maybe: int | None = 7
    where: Path | None = None
    names: list[str] = field(default_factory=lambda: ["a"])


@dataclass
class Branch:
    leaf: Leaf = field(default_factory=Leaf)
    leaves: dict[str, Leaf] = field(default_factory=dict)


@dataclass
class Root:
    branch: Branch = field(default_factory=Branch)
    top: int = 0


def refused(table: object, base: Path | None = None) -> ConfigFileError:
    with pytest.raises(ConfigFileError) as info:
        from_table(Root, table, source="t.toml", base=base)
    assert "\n" not in str(info.value)
    return info.value


# -- mapping ---------------------------------------------------------------------------------


def test_missing_keys_keep_their_defaults_and_nested_tables_map() -> None:
    cfg = from_table(Root, {"branch": {"leaf": {"n": 3, "names": ["x", "y"]}}})
    assert cfg.branch.leaf == Leaf(n=3, names=["x", "y"])
    assert cfg.top == 0
    assert from_table(Root, {}) == Root()
    # a default list is not shared between loads
    assert from_table(Root, {}).branch.leaf.names is not Root().branch.leaf.names


def test_types_are_strict_but_an_int_is_a_float() -> None:
    assert from_table(Leaf, {"x": 2}).x == 2.0
    assert isinstance(from_table(Leaf, {"x": 2}).x, float)
    assert from_table(Leaf, {"maybe": 5}).maybe == 5
    for key, value, expected in [
        ("n", True, "expected int, got True"),
        ("n", 1.0, "expected int, got 1.0"),
        ("n", "5", "expected int, got '5'"),
        ("x", False, "expected float, got False"),
        ("flag", 1, "expected bool, got 1"),
        ("name", 5, "expected str, got 5"),
        ("maybe", "x", "expected int, got 'x'"),
        ("where", 5, "expected a path string, got 5"),
        ("names", "abc", "expected a list, got 'abc'"),
    ]:
        exc = refused({"branch": {"leaf": {key: value}}})
        assert (exc.key, exc.detail) == (f"branch.leaf.{key}", expected)
        assert str(exc) == f"t.toml: branch.leaf.{key}: {expected}"


def test_errors_name_the_dotted_key() -> None:
    exc = refused({"branch": {"leaf": {"nn": 1}}})
    assert exc.key == "branch.leaf.nn"
    assert exc.detail.startswith("unknown key (known: flag, maybe, n, name, names, where, x)")
    assert refused({"branch": {"leaf": {"names": ["a", 2]}}}).key == "branch.leaf.names[1]"
    assert refused({"branch": {"leaves": {"k": {"n": "1"}}}}).key == "branch.leaves.k.n"
    assert refused({"branch": 5}).detail == "expected a table, got 5"
    assert refused({"branch": {"leaves": []}}).detail == "expected a table, got []"
    assert refused({"zz": {}}).key == "zz"
    assert refused([1]).key == "-"


def test_relative_paths_are_resolved_against_the_base_only_when_given(tmp_path: Path) -> None:
    leaf = {"branch": {"leaf": {"where": "ca/ca.pem"}}}
    assert from_table(Root, leaf).branch.leaf.where == Path("ca/ca.pem")
    assert from_table(Root, leaf, base=tmp_path).branch.leaf.where == tmp_path / "ca/ca.pem"
    absolute = {"branch": {"leaf": {"where": "/etc/x.pem"}}}
    assert from_table(Root, absolute, base=tmp_path).branch.leaf.where == Path("/etc/x.pem")


# -- hostile input ---------------------------------------------------------------------------


def test_huge_values_and_keys_give_a_short_line() -> None:
    huge = "x" * (1 << 20)
    for table in (
        {"branch": {"leaf": {"n": huge}}},
        {"branch": {"leaf": {huge: 1}}},
        {"branch": {"leaf": {"names": [huge, 5]}}},
        {"branch": {"leaf": {"nn\nfake: line": 1}}},
    ):
        assert len(str(refused(table))) < 300


def test_huge_integers_are_refused_as_toml_does(tmp_path: Path) -> None:
    assert from_table(Leaf, {"n": 2**63 - 1}).n == 2**63 - 1
    assert refused({"top": -(2**63) - 1}).detail.startswith("integer out of range: -92233")
    assert refused({"top": 1 << 20_000}).detail == "integer out of range: an integer of 20001 bits"
    assert refused({1: 2, "a": 3}).key == "1"  # a Python caller's odd key is named, not a crash
    path = tmp_path / "big.toml"
    path.write_text("top = 0x" + "f" * 5000 + "\n")
    with pytest.raises(ConfigFileError, match="top: integer out of range: an integer of 20000"):
        tomlconfig.load(Root, path)
    path.write_text("top = " + "9" * 5000 + "\n")  # past Python's int-from-string limit
    with pytest.raises(ConfigFileError, match="not valid TOML: Exceeds the limit"):
        tomlconfig.load(Root, path)


def test_deeply_nested_input_is_refused_at_the_first_wrong_level(tmp_path: Path) -> None:
    deep: dict[str, object] = {}
    node = deep
    for _ in range(10_000):
        node["branch"] = {}
        node = node["branch"]  # type: ignore[assignment]
    assert refused(deep).key == "branch.branch"
    path = tmp_path / "deep.toml"
    path.write_text("top = " + "[" * 50_000 + "]" * 50_000 + "\n")
    with pytest.raises(ConfigFileError, match="not valid TOML"):
        tomlconfig.load(Root, path)
    path.write_text("[" + ".".join(["a"] * 20_000) + "]\n")
    with pytest.raises(ConfigFileError, match=r"deep.toml: a: unknown key"):
        tomlconfig.load(Root, path)


def test_special_and_oversized_files_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # nobody writes to it: opening it for reading would block without O_NONBLOCK
    link = tmp_path / "link.toml"
    link.symlink_to(fifo)
    for path in (fifo, link, tmp_path, Path(os.devnull)):
        with pytest.raises(ConfigFileError, match="cannot read: not a regular file"):
            tomlconfig.read_text(path)
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (tomlconfig.MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigFileError, match="larger than"):
        tomlconfig.read_text(big)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfetop = 1\n")
    with pytest.raises(ConfigFileError, match="not UTF-8"):
        tomlconfig.read_text(binary)
    with pytest.raises(ConfigFileError, match="cannot read: file not found"):
        tomlconfig.read_text(tmp_path / "absent.toml")


def test_a_symlink_to_a_regular_file_is_followed(tmp_path: Path) -> None:
    real = tmp_path / "real.toml"
    real.write_text("top = 3\n")
    link = tmp_path / "link.toml"
    link.symlink_to(real)
    assert tomlconfig.load(Root, link).top == 3


_SCALARS = st.one_of(
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
_NAMES = st.sampled_from(["device", "capture", "fps", "broker", "port", "years", "2027"]) | st.text(
    alphabet=string.printable, max_size=8
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_NAMES, inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_NAMES, _VALUES, max_size=5))
def test_any_table_maps_or_is_refused_in_one_line(table: dict[str, object]) -> None:
    for cls in (AgentConfig, ReceiverConfig, Root):
        error = None
        try:
            from_table(cls, table, source="fuzz.toml")
        except ConfigFileError as exc:
            error = exc
        assert error is None or ("\n" not in str(error) and error.key)


# -- the front ends --------------------------------------------------------------------------


def test_agent_errors_keep_their_type_and_fields(tmp_path: Path) -> None:
    with pytest.raises(AgentConfigError) as info:
        config_from_dict({"hardware": {"controls": {"record_pin": True}}}, source="a.toml")
    assert (info.value.source, info.value.key) == ("a.toml", "hardware.controls.record_pin")
    assert info.value.detail == "expected int, got True"
    assert config_from_dict({"hardware": {"controls": {"led_amber_pin": 5}}}).hardware.controls
    path = tmp_path / "agent.toml"
    path.write_text('[device]\nspool_dir = "spool"\n[uplink]\nbroker_port = 1.5\n')
    with pytest.raises(AgentConfigError) as info:
        load_config(path)
    assert str(info.value) == (f"config {path}: uplink.broker_port: expected int, got 1.5")
    path.write_text('[device]\nspool_dir = "spool"\n')
    assert load_config(path).device.spool_dir == "spool"  # the agent keeps paths as written
    path.write_text("[device\n")
    with pytest.raises(AgentConfigError, match=r"agent\.toml: -: not valid TOML"):
        load_config(path)


def test_receiver_resolves_paths_against_the_file_and_keeps_its_error(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "receiver.toml"
    path.write_text(
        'encryption_key = "keys/enc.key"\n[compliance]\nholiday_file = "/srv/h.toml"\n'
        "inspection_tolerance_s = 60\n[limits]\nmax_transfers = 3\n"
    )
    cfg = load_receiver_config(path)
    assert cfg.encryption_key == tmp_path / "etc" / "keys" / "enc.key"
    assert cfg.compliance.holiday_file == Path("/srv/h.toml")
    assert cfg.compliance.inspection_tolerance_s == 60.0
    assert cfg.limits.max_transfers == 3
    assert cfg.data_dir == Path("receiver-data")  # a default is not resolved
    path.write_text("[limits]\nmax_transfer = 3\n")
    with pytest.raises(ReceiverConfigError) as info:
        load_receiver_config(path)
    assert info.value.path == path
    assert info.value.reason.startswith("limits.max_transfer: unknown key")


def test_command_lines_print_one_line_for_a_fifo_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    assert receiver_main(["--config", str(fifo), "devices"]) == 2
    err = capsys.readouterr().err
    assert err == f"bodycam-receiver: {fifo}: cannot read: not a regular file\n"
    assert agent_main(["check", "--config", str(fifo)]) == 2
    err = capsys.readouterr().err
    assert err == f"bodycam-agent: config {fifo}: -: cannot read: not a regular file\n"


def test_holiday_file_type_errors_name_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "holidays.toml"
    path.write_text('[years.2027]\nsource = "x"\nworkdays = "2027-02-14"\n')
    with pytest.raises(HolidayFileError) as info:
        load_holiday_file(path)
    assert info.value.line == 3
    assert info.value.reason == "years.2027.workdays: expected a list, got '2027-02-14'"
    path.write_text('[years.2027]\nsource = "x"\n\nholidays = ["2027-01-01", 5]\n')
    with pytest.raises(HolidayFileError) as info:
        load_holiday_file(path)
    assert (info.value.line, info.value.reason) == (
        4,
        "years.2027.holidays[1]: expected str, got 5",
    )
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(HolidayFileError, match="not a regular file"):
        load_holiday_file(path)


def test_selftest_reads_agent_toml_with_the_agents_loader(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    with pytest.raises(MaterialError, match=r"agent\.toml is missing"):
        load_material(path)
    text = render_agent_config("DEV-0007", "dock.local", 8884, root=tmp_path)
    path.write_text(text)
    material = load_material(path)
    assert (material.device_id, material.host, material.port) == ("DEV-0007", "dock.local", 8884)
    assert material.cert_file == tmp_path / "device.pem"
    path.write_text(text.replace("broker_port", "broker_prot"))
    with pytest.raises(MaterialError, match=r"unusable: uplink\.broker_prot: unknown key"):
        load_material(path)
    path.write_text(text.replace("cert_file", "# cert_file"))
    with pytest.raises(MaterialError, match=r"lacks a broker setting \(uplink\.cert_file\)"):
        load_material(path)
    path.write_text(text.replace('id = "DEV-0007"', ""))
    with pytest.raises(MaterialError, match=r"lacks a broker setting \(device\.id\)"):
        load_material(path)
