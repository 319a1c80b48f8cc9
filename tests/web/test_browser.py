"""End to end in a real headless Chromium (Debian's, driven by Playwright) with a fake
camera playing the shared Hamilton clip: the live page draws boxes and mask labels,
a person enrolled on the People page is named on the live page and disappears when
deleted, and the dashboard counts the events. Screenshots go to ``test-artefacts/``."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
from tests.web.browser import artefact, browser_skip_reason, chromium_args, running_server

pytestmark = pytest.mark.slow

REASON = browser_skip_reason()
PASSWORD = "e2e-admin-password"


@pytest.fixture(scope="module")
def y4m(tmp_path_factory, datasets) -> Path:
    from maskwatch.ops.y4m import write_y4m

    cap = cv2.VideoCapture(str(datasets / "videos" / "short_hamilton_clip.mp4"))
    frames = []
    while len(frames) < 150:  # 5 s at 30 fps, looped by Chromium
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    path = tmp_path_factory.mktemp("camera") / "hamilton.y4m"
    write_y4m(frames, path, fps=30)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if REASON:
        pytest.skip(REASON)
    home = tmp_path_factory.mktemp("e2e") / "home"
    home.mkdir()
    with running_server(home, PASSWORD) as url:
        yield url


@pytest.fixture(scope="module")
def browser(y4m):
    if REASON:
        pytest.skip(REASON)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=chromium_args(y4m))
        yield b
        b.close()


def live_stats(page) -> dict:
    return page.evaluate("() => window.maskwatchStats")


def wait_for(page, script: str, timeout_s: float = 30.0) -> None:
    page.wait_for_function(script, timeout=timeout_s * 1000, polling=200)


def test_live_people_and_dashboard(server, browser, datasets):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    try:
        live = context.new_page()
        live.goto(server + "/?autostart=1")
        # boxes and mask labels for the faces of the clip
        wait_for(live, "() => window.maskwatchStats && window.maskwatchStats.frames > 20 "
                       "&& window.maskwatchStats.faces > 0 && window.maskwatchStats.labels.some(l => l)")
        s = live_stats(live)
        assert s["lastResult"]["width"] == 640 and s["lastResult"]["height"] == 360
        assert all(f["box"][2] > f["box"][0] for f in s["lastResult"]["faces"])
        assert set(filter(None, s["labels"])) <= {"with_mask", "without_mask", "mask_incorrect"}
        # the overlay really has pixels drawn on it
        drawn = live.evaluate("""() => { const c = document.getElementById('overlay');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }""")
        assert drawn > 500
        wait_for(live, "() => window.maskwatchStats.fps > 0 && window.maskwatchStats.latencyP95 !== null")
        assert live.inner_text("#fps") != "-"
        live.screenshot(path=str(artefact("live-boxes.png")))

        # enrol Lin-Manuel Miranda through the People page (log in first)
        people = context.new_page()
        people.goto(server + "/people")
        assert "/login" in people.url
        people.fill('input[name="password"]', PASSWORD)
        people.click('button[type="submit"]')
        people.wait_for_url("**/people")
        people.fill("#enrol-name", "Lin-Manuel")
        people.set_input_files("#enrol-photos", str(datasets / "identity-examples" / "examples" / "lin-manuel-miranda.png"))
        people.click("#enrol-submit")
        people.wait_for_selector("text=Enrolled Lin-Manuel")
        assert people.inner_text('tr[data-name="Lin-Manuel"] td.name') == "Lin-Manuel"
        people.screenshot(path=str(artefact("people-enrolled.png")))

        wait_for(live, "() => window.maskwatchStats.names.includes('Lin-Manuel')", 40)
        live.screenshot(path=str(artefact("live-named.png")))

        # delete with confirmation: dismissing keeps the person, accepting deletes
        people.once("dialog", lambda d: d.dismiss())
        people.click('tr[data-name="Lin-Manuel"] button.danger')
        assert people.locator('tr[data-name="Lin-Manuel"]').count() == 1
        people.once("dialog", lambda d: d.accept())
        people.click('tr[data-name="Lin-Manuel"] button.danger')
        people.wait_for_selector("text=Deleted Lin-Manuel")
        assert people.locator('tr[data-name="Lin-Manuel"]').count() == 0

        live.wait_for_timeout(1500)
        wait_for(live, "() => window.maskwatchStats.faces > 0 && !window.maskwatchStats.names.includes('Lin-Manuel')", 20)
        for _ in range(10):  # and it stays gone
            assert "Lin-Manuel" not in live_stats(live)["names"]
            live.wait_for_timeout(200)
        live.screenshot(path=str(artefact("live-after-delete.png")))

        # stopping the camera ends its tracks: they become events on the dashboard
        live.click("#stop")
        dash = context.new_page()
        dash.goto(server + "/events")
        wait_for(dash, "() => window.maskwatchDashboard && window.maskwatchDashboard.loaded "
                       "&& window.maskwatchDashboard.total > 0", 30)
        total = int(dash.inner_text("#total"))
        rows = dash.locator("#events tbody tr").count()
        assert total >= 1 and rows == min(total, 25)
        assert dash.inner_text("#unknown") != "-"
        dash.screenshot(path=str(artefact("dashboard.png")), full_page=True)
    finally:
        context.close()
