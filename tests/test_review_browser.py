"""The review app for real: `kidsart review serve` on a scored district run, driven by headless Chromium (Debian's
`chromium`, through Playwright) and by the JSON API over HTTP.

A teacher logs in, opens the queue, corrects two dimensions and the feedback of one artwork and confirms another;
the export holds exactly those. A school folder named like markup shows as text on every page (no element, no
script); a form posted without its CSRF token is refused (403). Two reviewer keys on the API: 401 without a key,
409 on a stale version. The app is SIGKILLed and started again: every saved level is still there.
Screenshots of the queue and an artwork page go to $KIDSART_SCREENSHOTS (default: the test's folder).
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, wait_for
from tests.test_review_run import HOSTILE, scored_run  # noqa: F401 (the module-scoped fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KIDSART = str(Path(sys.executable).with_name("kidsart"))
ANA, BEN = "ana-review-key-00000001", "ben-review-key-00000002"


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("chromium is not installed: run scripts/install-browser.sh")
    return found


def _start(run_dir: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "KIDSART_REVIEW_KEYS": f"ana:{ANA},ben:{BEN}"}
    with log.open("ab") as handle:
        process = subprocess.Popen(
            [KIDSART, "review", "serve", str(run_dir), "--port", str(port)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def up():
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            return httpx.get(f"http://127.0.0.1:{port}/login", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 60, "the review app to answer")
    return process


def test_a_teacher_reviews_in_a_browser_and_every_save_survives_a_kill(scored_run, tmp_path):  # noqa: F811
    from playwright.sync_api import sync_playwright

    _, out, _ = scored_run
    run_dir = tmp_path / "run"
    shutil.copytree(out, run_dir)
    port, log = free_port(), tmp_path / "review.log"
    base = f"http://127.0.0.1:{port}"
    shots = Path(os.environ.get("KIDSART_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    process = _start(run_dir, port, log)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(f"{base}/")
            assert page.url.endswith("/login")
            page.fill("input[name=key]", ANA)
            page.click("button:has-text('Log in')")
            page.wait_for_url(f"{base}/")
            assert "signed in as ana" in page.content()
            page.select_option("select[name=school]", HOSTILE)
            page.click("button:has-text('Filter')")
            assert page.locator("td", has_text=HOSTILE).count() > 0  # shown as text
            assert page.locator('img[src="x"]').count() == 0 and not dialogs  # never as markup
            page.goto(f"{base}/")
            page.screenshot(path=str(shots / "review-queue.png"), full_page=True)
            links = page.locator("tbody a")
            first_href, second_href = links.nth(0).get_attribute("href"), links.nth(1).get_attribute("href")

            page.goto(base + first_href)
            page.screenshot(path=str(shots / "review-artwork.png"), full_page=True)
            page.select_option("select[name=level_realism]", "5")
            page.select_option("select[name=level_imagination]", "1")
            page.fill("textarea[name=feedback]", "Bold shapes; try more line textures.")
            page.check("input[name=feedback_edited]")
            page.click("button:has-text('Save levels')")
            assert "Saved (version 1)" in page.content()
            page.goto(base + second_href)
            page.click("button:has-text('Confirm as is')")
            assert "Saved (version 1)" in page.content()
            refused = page.request.post(base + first_href, form={"level_realism": "1", "seen_version": "1"})
            assert refused.status == 403  # the session cookie without the form's CSRF token
            browser.close()

        # the JSON API, two reviewers
        first_id = first_href.rsplit("/", 1)[1]
        assert httpx.get(f"{base}/api/queue").status_code == 401
        stale = httpx.post(
            f"{base}/api/artworks/{first_id}/review",
            headers={"Authorization": f"Bearer {BEN}"},
            json={"levels": {"realism": 2}, "seen_version": 0},
        )
        assert stale.status_code == 409 and stale.json()["current"]["levels"]["realism"] == 5

        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        process = _start(run_dir, port, log)
        again = httpx.get(f"{base}/api/artworks/{first_id}", headers={"Authorization": f"Bearer {BEN}"}).json()
        assert again["version"] == 1 and again["review"]["levels"] == {"realism": 5, "imagination": 1}
        assert again["review"]["feedback"] == "Bold shapes; try more line textures."
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)

    export = tmp_path / "corrections.csv"
    done = subprocess.run(
        [KIDSART, "review", "export", str(run_dir), "--format", "training-csv", "--out", str(export)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {r["name"].split(".")[0]: r for r in csv.DictReader(export.open(encoding="utf-8"))}
    second_id = second_href.rsplit("/", 1)[1]
    assert set(rows) == {first_id, second_id}
    assert rows[first_id]["realism"] == "5" and rows[first_id]["imagination"] == "1"
    assert rows[first_id]["comment"] == "Bold shapes; try more line textures."
    assert all(rows[first_id][d] == "" for d in ("deformation", "color_richness", "transformation"))
    assert all(rows[second_id][d] in "12345" and rows[second_id][d] for d in ("realism", "deformation"))
