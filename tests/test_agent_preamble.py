"""The spoken preamble (Art. 12), the assignment it is built from, speech, and the config."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.config import AssignmentConfig, config_from_dict, load_config
from agent.errors import AgentConfigError, SpeechError
from agent.preamble import Assignment, build_preamble, load_assignment
from agent.tts import EspeakSynthesizer

WHEN = datetime(2026, 11, 29, 8, 5, tzinfo=UTC)  # 16:05 in Beijing
ASSIGNMENT = Assignment(
    case="JY-2026-0042",
    officers=["张三", "李四"],
    place="太原市迎泽区某商铺",
    reason="无证经营举报",
    target="某商铺经营者",
    stage="investigation",
)


def test_chinese_preamble_for_an_assignment() -> None:
    [(lang, text)] = build_preamble(ASSIGNMENT, WHEN, ["zh"])
    assert lang == "zh"
    assert text == (
        "现在是北京时间2026年11月29日16时5分。执法地点：太原市迎泽区某商铺。"
        "执法人员：张三、李四。执法事由：无证经营举报。执法对象：某商铺经营者。"
        "执法环节：调查取证。案件编号：JY-2026-0042。现在开始全程录音录像，请知悉。"
    )


def test_english_follows_when_configured() -> None:
    texts = build_preamble(ASSIGNMENT, WHEN, ["zh", "en"])
    assert [lang for lang, _ in texts] == ["zh", "en"]
    en = texts[1][1]
    assert en.startswith("It is 16:05 Beijing time on 29 November 2026.")
    assert "Officers: 张三, 李四." in en
    assert en.endswith("Audio and video are now being recorded.")


def test_default_preamble_without_assignment_still_says_everything() -> None:
    [(_, text)] = build_preamble(Assignment(), WHEN, ["zh"])
    for label in ("执法地点", "执法人员", "执法事由", "执法对象", "执法环节"):
        assert label in text
    assert "未预先登记" in text
    assert "案件编号" not in text
    assert text.endswith("现在开始全程录音录像，请知悉。")


def test_assignment_from_the_dock_overrides_config(tmp_path: Path) -> None:
    defaults = AssignmentConfig(place="config place", officers=["王五"])
    assert load_assignment(tmp_path, defaults).place == "config place"
    (tmp_path / "assignment.json").write_text(json.dumps(ASSIGNMENT.to_dict()), encoding="utf-8")
    assert load_assignment(tmp_path, defaults) == ASSIGNMENT
    (tmp_path / "assignment.json").write_text('{"officers": "not a list"}', encoding="utf-8")
    assert load_assignment(tmp_path, defaults).officers == ["王五"]


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_espeak_speaks_the_preamble_in_the_pinyin_voice() -> None:
    [(_, text)] = build_preamble(ASSIGNMENT, WHEN, ["zh"])
    speech = EspeakSynthesizer().synthesize(text, "cmn-latn-pinyin")
    assert speech.sample_rate_hz > 8000
    assert speech.channels == 1
    # ~90 syllables: several seconds of audio, and not silence
    assert 5.0 < speech.duration_s < 60.0
    assert max(speech.pcm_s16le[1::2]) > 10


def test_missing_voice_is_a_clear_speech_error() -> None:
    synth = EspeakSynthesizer(executable="espeak-ng-that-does-not-exist")
    with pytest.raises(SpeechError, match="not installed"):
        synth.synthesize("测试", "cmn-latn-pinyin")


def test_config_file_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        '[device]\nid = "DEV-1"\n[capture]\npre_event_s = 10\n'
        '[speech]\nlanguages = ["zh", "en"]\n[hardware.controls]\nhold_time_s = 2\n',
        encoding="utf-8",
    )
    cfg = load_config(path)
    assert cfg.device.id == "DEV-1"
    assert cfg.capture.pre_event_s == 10.0
    assert cfg.hardware.controls.hold_time_s == 2.0
    assert cfg.recording.cue_interval_min == 2.0  # untouched default
    with pytest.raises(AgentConfigError, match=r"capture\.pre_event_sec: unknown key"):
        config_from_dict({"capture": {"pre_event_sec": 5}})
    with pytest.raises(AgentConfigError, match=r"capture\.fps: expected int"):
        config_from_dict({"capture": {"fps": "fast"}})
    with pytest.raises(AgentConfigError, match="languages"):
        config_from_dict({"speech": {"languages": ["fr"]}})
    with pytest.raises(AgentConfigError, match="file not found"):
        load_config(tmp_path / "absent.toml")


def test_the_config_provisioning_writes_loads() -> None:
    import tomllib

    from provisioning.configs import render_agent_config

    text = render_agent_config("DEV-0007", "dock.local", 8883)
    cfg = config_from_dict(tomllib.loads(text), source="provisioned agent.toml")
    assert cfg.device.id == "DEV-0007"
    assert cfg.key_path.name == "signing.key"
    assert (cfg.uplink.broker_host, cfg.uplink.broker_port) == ("dock.local", 8883)
