"""The Clock implementations: simulated time moves only when told to, real time always does."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.clock import SIMULATED_BOOT_ID, SimulatedClock, SystemClock, read_boot_id

START = datetime(2026, 11, 30, 8, 0, 0, tzinfo=UTC)


def test_fast_simulated_clock_moves_only_when_advanced_or_slept() -> None:
    clock = SimulatedClock(START)
    mono = clock.monotonic_ns()
    time.sleep(0.02)
    assert clock.utc_now() == START
    assert clock.monotonic_ns() == mono
    clock.advance_ns(1_500_000_000)
    clock.sleep(2.0)  # returns at once, time jumps
    assert clock.utc_now() == START + timedelta(seconds=3.5)
    assert clock.monotonic_ns() - mono == 3_500_000_000
    assert clock.boot_id == SIMULATED_BOOT_ID


def test_simulated_clock_refuses_to_go_back_and_naive_start() -> None:
    clock = SimulatedClock(START)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance_ns(-1)
    with pytest.raises(ValueError, match="timezone-aware"):
        SimulatedClock(datetime(2026, 1, 1))


def test_sleep_until_ns_on_a_fast_clock_lands_on_the_deadline() -> None:
    clock = SimulatedClock(START)
    target = clock.monotonic_ns() + 250_000_000
    clock.sleep_until_ns(target)
    assert clock.monotonic_ns() == target
    clock.sleep_until_ns(target - 1)  # in the past: no-op
    assert clock.monotonic_ns() == target


def test_realtime_simulated_clock_follows_real_time_plus_jumps() -> None:
    real0 = time.monotonic()
    clock = SimulatedClock(START, realtime=True)
    time.sleep(0.05)
    elapsed = (clock.utc_now() - START).total_seconds()
    real_elapsed = time.monotonic() - real0
    assert 0.05 - 0.001 <= elapsed <= real_elapsed + 0.001  # follows real time, however slow
    clock.advance_ns(10 * 10**9)
    assert (clock.utc_now() - START).total_seconds() >= 10.05 - 0.001


def test_fast_clock_is_consistent_across_threads() -> None:
    clock = SimulatedClock(START)

    def worker() -> None:
        for _ in range(1000):
            clock.advance_ns(1000)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clock.utc_now() == START + timedelta(microseconds=4000)


def test_system_clock_is_aware_utc_and_monotonic() -> None:
    clock = SystemClock()
    now = clock.utc_now()
    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)
    assert abs((now - datetime.now(UTC)).total_seconds()) < 1
    a = clock.monotonic_ns()
    clock.sleep(0.01)
    assert clock.monotonic_ns() - a >= 10_000_000
    assert clock.boot_id


def test_boot_id_falls_back_when_unreadable(tmp_path: Path) -> None:
    first = read_boot_id(tmp_path / "missing")
    second = read_boot_id(tmp_path / "missing")
    assert first != second
    assert len(first) == 36
    real = tmp_path / "boot_id"
    real.write_text("1234-abcd\n")
    assert read_boot_id(real) == "1234-abcd"


def test_fast_clock_sleep_runs_the_attached_driver() -> None:
    clock = SimulatedClock(START)
    asked: list[int] = []

    def driver(ns: int) -> None:
        asked.append(ns)
        clock.advance_ns(ns)

    clock.attach_driver(driver)
    clock.sleep(0.25)
    assert asked == [250_000_000]
    assert clock.utc_now() == START + timedelta(seconds=0.25)
    clock.attach_driver(None)
    clock.sleep(1.0)
    assert asked == [250_000_000]


def test_fast_clock_never_ahead_of_real_time_waits_for_it() -> None:
    start = datetime.now(UTC)
    clock = SimulatedClock(start, never_ahead_of_real=True)
    clock.advance_ns(300_000_000)  # 0.3 s into the future: it waits until that is the past
    assert clock.utc_now() <= datetime.now(UTC)
    assert (datetime.now(UTC) - start).total_seconds() >= 0.3 - 0.001


def test_an_advance_stops_at_each_timer_and_calls_it_at_its_deadline() -> None:
    clock = SimulatedClock(START)
    t0 = clock.monotonic_ns()
    seen: list[tuple[str, int]] = []

    def at(name: str, offset_ns: int) -> None:
        clock.call_at(t0 + offset_ns, lambda: seen.append((name, clock.monotonic_ns() - t0)))

    at("late", 700)
    at("early", 200)
    at("same time, registered later", 700)
    clock.advance_ns(1_000)
    assert seen == [("early", 200), ("late", 700), ("same time, registered later", 700)]
    assert clock.monotonic_ns() - t0 == 1_000  # the whole advance, not just to the last timer


def test_a_timer_set_from_a_timer_in_the_same_advance_is_called_too() -> None:
    clock = SimulatedClock(START)
    t0 = clock.monotonic_ns()
    seen: list[int] = []

    def tick() -> None:
        seen.append(clock.monotonic_ns() - t0)
        if len(seen) < 3:
            clock.call_at(clock.monotonic_ns() + 100, tick)

    clock.call_at(t0 + 100, tick)
    clock.advance_ns(10_000)
    assert seen == [100, 200, 300]


def test_a_cancelled_or_failing_timer_does_not_stop_time(caplog: pytest.LogCaptureFixture) -> None:
    clock = SimulatedClock(START)
    t0 = clock.monotonic_ns()
    seen: list[int] = []

    def broken() -> None:
        raise RuntimeError("listener bug")

    clock.call_at(t0 + 100, lambda: seen.append(100)).cancel()
    clock.call_at(t0 + 200, broken)
    clock.call_at(t0 + 300, lambda: seen.append(300))
    clock.sleep(1e-6)  # no driver: sleeping advances, through the timers
    assert seen == [300]
    assert clock.monotonic_ns() - t0 == 1_000
    assert "clock timer callback failed" in caplog.text


def test_realtime_clock_has_no_stepped_timers() -> None:
    clock = SimulatedClock(START, realtime=True)
    assert not clock.stepped
    with pytest.raises(ValueError, match="stepped"):
        clock.call_at(clock.monotonic_ns() + 1, lambda: None)
