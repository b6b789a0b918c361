"""The device's own pre-capture checks with its production configuration, from inside the
unit's sandbox: camera, microphone, encryption at rest, signing key, spool and clock source.

``bodycam-agent check --json`` runs as the agent would (the unit must be stopped: the camera is
exclusive). Encryption must be on (a fielded device never records plaintext), and the clock
check must have reached the time service from inside the sandbox (``time_service`` answered).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hardware_tests.conftest import missing

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _check_report() -> dict[str, dict[str, object]]:
    exe = shutil.which("bodycam-agent") or str(Path(sys.executable).parent / "bodycam-agent")
    if not Path(exe).exists():
        missing("bodycam-agent is not installed")
    config = os.environ.get("BODYCAM_AGENT_CONFIG", "/etc/bodycam/agent.toml")
    done = subprocess.run(
        [exe, "check", "--config", config, "--json"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        missing(f"bodycam-agent check gave no report: {done.stderr.strip()[-300:]}")
    return {item["name"]: item for item in report["checks"]}


def test_production_checks_pass_inside_the_sandbox() -> None:
    checks = _check_report()
    for name in ("camera", "microphone", "signing_key", "spool", "storage", "battery"):
        item = checks.get(name)
        assert item is not None, f"no {name} check in the report"
        if item["outcome"] == "fail":
            missing(f"{name}: {item['reason']}")
    encryption = checks["encryption"]
    assert encryption["outcome"] == "pass", f"encryption at rest is off: {encryption['reason']}"
    clock = checks["clock"]
    data = clock.get("data") or {}
    assert isinstance(data, dict), (
        f"the clock check could not ask a time service from the sandbox: {clock['reason']}"
    )
    assert data.get("time_service"), (
        f"the clock check could not ask a time service from the sandbox: {clock['reason']}"
    )
