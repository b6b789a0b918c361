"""The review console in a real browser: Playwright driving Debian's chromium (never a
downloaded one) against ``bodycam-receiver web`` over HTTPS. A clerk signs in, files the inbox
session, requests view and export approvals, a supervisor grants them, the clerk plays the
session (the video element plays and its time advances; seeking into the third segment works),
downloads the case file (checked with ``bodycam-verify``) and opens the report. Every page is
kept as a screenshot in the test's directory (and in ``$BODYCAM_ARTIFACTS`` when set)."""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evidence.cli import main as verify_main
from tests.support.console import CASE, PASSWORD, Site, build_site

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    s = build_site(tmp_path_factory.mktemp("browser"))
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (scripts/setup installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()


class Shots:
    """Screenshots of each page, kept with the test and copied to $BODYCAM_ARTIFACTS."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.taken: list[Path] = []

    def take(self, page: Any, name: str) -> None:
        path = self.dir / f"{len(self.taken):02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        target = os.environ.get("BODYCAM_ARTIFACTS")
        if target:
            Path(target, "web").mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(target, "web", path.name))


def sign_in(browser: Any, site: Site, user: str, shots: Shots | None = None) -> Any:
    # the console's certificate is from the dock CA; chromium here does not have it installed
    context = browser.new_context(ignore_https_errors=True, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{site.url}/cases")
    assert "/login" in page.url  # signed out: sent to the sign-in page
    if shots:
        shots.take(page, "sign-in")
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.url}/cases")
    return page


def test_a_clerks_day_in_the_browser(site: Site, browser: Any, tmp_path: Path) -> None:
    shots = Shots(tmp_path / "screenshots")
    clerk = sign_in(browser, site, "clara", shots)
    assert clerk.locator("#cases").count() == 1
    shots.take(clerk, "cases")

    # the inbox: file the first session against the case
    clerk.click("a[href='/inbox']")
    shots.take(clerk, "inbox")
    row = clerk.locator("#inbox tr", has_text=site.sessions[0])
    row.locator("select[name=case]").select_option(CASE)
    row.locator("button[type=submit]").click()
    assert site.sessions[0] in clerk.locator("#message").inner_text()

    # the case page: timeline, preamble, checks, segments; no media without an approval
    clerk.goto(f"{site.url}/cases/{CASE}")
    assert clerk.locator(f"#session-{site.sessions[0]}").count() == 1
    assert clerk.locator("svg.timeline rect.segment").count() >= 3
    assert clerk.locator("a.play").count() == 0
    shots.take(clerk, "case-before-approval")

    # request view and export; the supervisor grants both
    for purpose in ("view", "export"):
        clerk.goto(f"{site.url}/approvals?case={CASE}")
        clerk.select_option("select[name=purpose]", purpose)
        clerk.fill("input[name=reason]", "行政复议需要")
        clerk.click("#request-approval button[type=submit]")
    assert clerk.locator("#approvals tr.pending").count() == 2
    shots.take(clerk, "approvals-requested")
    boss = sign_in(browser, site, "sven")
    boss.goto(f"{site.url}/approvals")
    for _ in range(2):
        boss.locator("#approvals tr.pending button.grant").first.click()
        boss.wait_for_load_state()
    assert boss.locator("#approvals tr.granted").count() == 2
    shots.take(boss, "approvals-granted")

    # playback: the browser's own player, across segments
    clerk.goto(f"{site.url}/cases/{CASE}")
    clerk.locator(f"#session-{site.sessions[0]} a.play").click()
    clerk.wait_for_selector("video#player")
    video = clerk.locator("video#player")
    video.evaluate("v => { v.muted = true; return v.play(); }")
    clerk.wait_for_function(
        "() => { const v = document.querySelector('video'); "
        "return v && !v.paused && v.readyState >= 3 && v.currentTime > 0.5; }",
        timeout=WAIT_MS,
    )
    t0 = video.evaluate("v => v.currentTime")
    clerk.wait_for_function(
        f"() => document.querySelector('video').currentTime > {t0} + 0.5", timeout=WAIT_MS
    )
    shots.take(clerk, "playing")
    starts = [float(a.get_attribute("data-start")) for a in clerk.locator("ol.jump a").all()]
    assert len(starts) >= 3
    third = starts[2] + 1.0
    video.evaluate(f"v => {{ v.currentTime = {third}; }}")
    clerk.wait_for_function(
        f"() => {{ const v = document.querySelector('video'); return !v.seeking && "
        f"v.currentTime >= {third} && v.readyState >= 2; }}",
        timeout=WAIT_MS,
    )
    assert starts[2] <= video.evaluate("v => v.currentTime") < starts[3]
    duration = video.evaluate("v => v.duration")
    assert duration >= starts[-1]
    shots.take(clerk, "seeked-third-segment")
    # the jump links of the page do the same without any script of ours
    clerk.locator("ol.jump a").nth(2).click()
    clerk.wait_for_function(
        f"() => {{ const v = document.querySelector('video'); return v.readyState >= 1 && "
        f"Math.abs(v.currentTime - {starts[2]}) < 1.0; }}",
        timeout=WAIT_MS,
    )

    # export: download the case file and verify it offline
    clerk.goto(f"{site.url}/cases/{CASE}/export")
    shots.take(clerk, "export")
    with clerk.expect_download(timeout=WAIT_MS) as info:
        clerk.click("#download")
    target = tmp_path / "casefile.zip"
    info.value.save_as(target)
    unpacked = tmp_path / "casefile"
    with zipfile.ZipFile(target) as z:
        z.extractall(unpacked)
    roots = [p.parent for p in unpacked.rglob("manifest.json")]
    assert roots, sorted(str(p) for p in unpacked.rglob("*"))[:20]
    assert verify_main([str(roots[0])]) == 0

    # the custody log of the case, with its verify action
    clerk.goto(f"{site.url}/cases/{CASE}/custody")
    clerk.click("#verify")
    assert "ok" in (clerk.locator("#verify-result").get_attribute("class") or "")
    kinds = clerk.locator("#custody").inner_text()
    assert "playback" in kinds
    assert "export" in kinds
    assert "view" in kinds
    shots.take(clerk, "custody")

    # the accountability report, the devices and the quarantine
    for path, name in (
        ("/report", "report"),
        ("/devices", "devices"),
        ("/quarantine", "quarantine"),
        ("/assignments", "assignments"),
    ):
        clerk.goto(f"{site.url}{path}")
        shots.take(clerk, name)
    clerk.goto(f"{site.url}/report")
    assert clerk.locator("#chart-kinds, #chart-delays").count() >= 1
    assert clerk.locator("#findings, #summary").count() >= 1

    # English on request
    clerk.goto(f"{site.url}/cases?lang=en")
    assert "Cases" in clerk.locator("h1").inner_text()
    shots.take(clerk, "cases-english")
    assert len(shots.taken) >= 12
    assert all(p.stat().st_size > 1000 for p in shots.taken)
