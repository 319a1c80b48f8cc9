"""End to end in a real headless Chromium (Debian's, driven by Playwright) with a fake
camera playing the shared Hamilton clip: the live page draws boxes and mask labels,
a person enrolled on the People page (from a photo, or from a snapshot of the camera) is
named on the live page and disappears when deleted, and the dashboard counts the events.
Screenshots go to ``test-artefacts/``."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from tests.web.browser import artefact, browser_skip_reason, chromium_args, running_server

pytestmark = pytest.mark.slow

REASON = browser_skip_reason()
PASSWORD = "e2e-admin-password"


@pytest.fixture(scope="module")
def camera_frames(datasets) -> list[np.ndarray]:
    """What the fake camera shows: the clip's first 150 frames (5 s at 30 fps), BGR."""
    cap = cv2.VideoCapture(str(datasets / "videos" / "short_hamilton_clip.mp4"))
    frames = []
    while len(frames) < 150:  # looped by Chromium
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


@pytest.fixture(scope="module")
def y4m(tmp_path_factory, camera_frames) -> Path:
    from maskwatch.ops.y4m import write_y4m

    path = tmp_path_factory.mktemp("camera") / "hamilton.y4m"
    write_y4m(camera_frames, path, fps=30)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if REASON:
        pytest.skip(REASON)
    home = tmp_path_factory.mktemp("e2e") / "home"
    home.mkdir()
    with running_server(home, PASSWORD) as srv:
        yield srv.url


@pytest.fixture(scope="module")
def browser(y4m):
    if REASON:
        pytest.skip(REASON)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                              args=chromium_args(y4m))
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
                       "&& window.maskwatchStats.faces > 0 "
                       "&& window.maskwatchStats.labels.some(l => l)")
        s = live_stats(live)
        assert s["lastResult"]["width"] == 640 and s["lastResult"]["height"] == 360
        assert all(f["box"][2] > f["box"][0] for f in s["lastResult"]["faces"])
        assert set(filter(None, s["labels"])) <= {"with_mask", "without_mask", "mask_incorrect"}
        # the overlay really has pixels drawn on it
        drawn = live.evaluate("""() => { const c = document.getElementById('overlay');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }""")
        assert drawn > 500
        wait_for(live, "() => window.maskwatchStats.fps > 0 "
                       "&& window.maskwatchStats.latencyP95 !== null")
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
        people.set_input_files("#enrol-photos", str(datasets / "identity-examples" / "examples"
                                                    / "lin-manuel-miranda.png"))
        people.click("#enrol-submit")
        people.wait_for_selector("text=Enrolled Lin-Manuel")
        assert people.inner_text('tr[data-name="Lin-Manuel"] td.name') == "Lin-Manuel"
        people.screenshot(path=str(artefact("people-enrolled.png")))

        live.bring_to_front()  # a hidden page gets no video frame callbacks: it would stop sending
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
        live.bring_to_front()
        wait_for(live, "() => window.maskwatchStats.faces > 0 "
                       "&& !window.maskwatchStats.names.includes('Lin-Manuel')", 20)
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


def multipart_file(request, field: str) -> bytes:
    """The bytes of file field ``field`` in a multipart/form-data request Playwright saw."""
    boundary = request.headers["content-type"].split("boundary=", 1)[1].strip('"').encode()
    for part in request.post_data_buffer.split(b"--" + boundary):
        head, sep, body = part.partition(b"\r\n\r\n")
        if sep and f'name="{field}"'.encode() in head and b"filename=" in head:
            return body[:-2] if body.endswith(b"\r\n") else body
    raise AssertionError(f"no file field {field!r} in the request")


# Sends one JPEG (a list of byte values) three times on /ws/live as a new stream and
# returns the faces of the last result (a new track may be named from its first frame on).
LIVE_RESULT_OF_JPEG = """async (bytes) => {
  const ws = new WebSocket(location.origin.replace(/^http/, "ws") + "/ws/live");
  ws.binaryType = "arraybuffer";
  const messages = [];
  let wake = null;
  ws.onmessage = (ev) => { messages.push(JSON.parse(ev.data)); if (wake) wake(); };
  const next = () => new Promise((resolve, reject) => {
    if (messages.length) return resolve(messages.shift());
    wake = () => { wake = null; resolve(messages.shift()); };
    setTimeout(() => reject(new Error("no answer from /ws/live")), 20000);
  });
  await new Promise((resolve) => { ws.onopen = resolve; });
  const hello = await next();
  if (hello.type !== "hello") throw new Error("no hello: " + JSON.stringify(hello));
  let result = null;
  for (let seq = 0; seq < 3; seq++) {
    const msg = new Uint8Array(4 + bytes.length);
    new DataView(msg.buffer).setUint32(0, seq);
    msg.set(bytes, 4);
    ws.send(msg);
    result = await next();
    if (result.error) throw new Error(result.error);
  }
  ws.close();
  return result.faces;
}"""


def test_enrol_from_camera_snapshot(server, browser, camera_frames):
    """The People page's 'Enrol from snapshot': the person the camera shows at that moment
    is enrolled (the largest face of the snapshot, as the API does) and then named live."""
    name = "Snapshot Person"
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    people = None
    try:
        live = context.new_page()
        live.goto(server + "/?autostart=1")
        wait_for(live, "() => window.maskwatchStats && window.maskwatchStats.frames > 10")
        assert name not in live_stats(live)["names"]

        people = context.new_page()
        people.goto(server + "/login?next=/people")
        people.fill('input[name="password"]', PASSWORD)
        people.click('button[type="submit"]')
        people.wait_for_url("**/people")
        people.fill("#enrol-name", name)
        assert people.is_disabled("#cam-snap")  # no snapshot before the camera is open
        people.click("#cam-start")
        people.wait_for_selector("#cam-status:has-text('camera on')")
        wait_for(people, "() => document.getElementById('cam-video').videoWidth > 0", 10)

        # The clip has a second and a half without any face: a snapshot then is refused with
        # the API's message on the page, and the user takes another.
        bodies: list[bytes] = []

        def keep_body(route) -> None:
            bodies.append(multipart_file(route.request, "photos"))
            route.continue_()

        people.route("**/api/people", keep_body)
        snapshot, refused = None, 0
        for _ in range(10):
            with people.expect_request(lambda r: r.url.endswith("/api/people")
                                       and r.method == "POST") as seen:
                people.click("#cam-snap")
            response = seen.value.response()
            if response.status == 201:
                snapshot = bodies[-1]
                break
            assert (response.status == 422
                    and "no face" in response.json()["detail"]), response.text()
            people.wait_for_selector("#cam-status:has-text('no face')")
            refused += 1
            people.wait_for_timeout(600)
        assert snapshot is not None, f"{refused} snapshots refused, none enrolled"
        people.wait_for_selector(f"text=Enrolled {name} from a snapshot.")
        assert people.inner_text(f'tr[data-name="{name}"] td.name') == name
        people.screenshot(path=str(artefact("people-snapshot-enrolled.png")))

        # the snapshot is a frame of what the camera showed, at the camera's size
        shot = cv2.imdecode(np.frombuffer(snapshot, np.uint8), cv2.IMREAD_COLOR)
        assert shot.shape == camera_frames[0].shape
        errors = [float(np.mean(np.abs(shot.astype(np.int16) - f.astype(np.int16))))
                  for f in camera_frames]
        assert min(errors) < 6.0, min(errors)  # JPEG and YUV round trips only
        # and the person enrolled is the one in it: the live engine, sent the snapshot itself
        # (over the live page's WebSocket protocol), names a face in it. (Which face, when
        # the frame holds several of about one size, depends on the detector's boxes in
        # photo and live mode, so the test does not insist on the largest.)
        faces = people.evaluate(LIVE_RESULT_OF_JPEG, list(snapshot))
        assert faces, "the live engine finds no face in the snapshot"
        named = [f for f in faces if f.get("identity") == name]
        assert named or len(faces) > 1, faces

        live.bring_to_front()  # a hidden page gets no video frame callbacks: it would stop sending
        wait_for(live, f"() => window.maskwatchStats.names.includes({name!r})", 40)
        live.screenshot(path=str(artefact("live-snapshot-named.png")))
    finally:
        # leave the module's server without this person for the other tests
        if people is not None and not people.is_closed():
            people.evaluate("n => window.maskwatch && window.maskwatch.fetch("
                            "'/api/people/' + encodeURIComponent(n), {method: 'DELETE'})"
                            ".then(r => r.status)", name)
        context.close()


def test_api_docs_render_offline(server, browser):
    """/docs is Swagger UI served by maskwatch itself: it renders every route with no
    request leaving this server (the machine it runs on may have no internet)."""
    page = browser.new_page()
    try:
        urls: list[str] = []
        page.on("request", lambda r: urls.append(r.url))
        page.goto(server + "/docs")
        page.wait_for_selector(".swagger-ui .info .title", timeout=20000)
        assert "maskwatch" in page.inner_text(".swagger-ui .info .title")
        assert page.locator(".opblock").count() >= 10
        assert urls and all(u.startswith(server) for u in urls), [u for u in urls
                                                                   if not u.startswith(server)]
    finally:
        page.close()
