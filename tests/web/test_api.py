"""Every route of the web app through FastAPI's TestClient, on the real engine and a
SQLite store in tmp: answers, authentication and CSRF failures, bad uploads."""

from __future__ import annotations

import io
import json
import re
import time

import cv2
import numpy as np
import pytest
from PIL import Image
from tests.web.conftest import BEARER, PASSWORD, csrf_of, login
from tests.web.live_client import clip_frames, send_frames


def png_bytes(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (120, 130, 140)).save(buf, "PNG")
    return buf.getvalue()


def jpeg_of(path) -> bytes:
    return path.read_bytes()


@pytest.fixture
def anon(client):
    """The shared client with no cookies (logged out, no CSRF seed)."""
    client.cookies.clear()
    yield client
    client.cookies.clear()


# -- open routes -------------------------------------------------------------------------


def test_health_and_docs(anon):
    r = anon.get("/api/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["events"] is True
    docs = anon.get("/docs")
    assert docs.status_code == 200
    # Works offline: every script and stylesheet of the docs page comes from this server.
    import re

    assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert assets and all(a.startswith("/static/") for a in assets), assets
    for a in assets:
        assert anon.get(a).status_code == 200, a
    paths = anon.get("/openapi.json").json()["paths"]
    for p in ("/api/analyze", "/api/people", "/api/people/{name}", "/api/events", "/api/stats",
              "/api/health", "/api/events.csv", "/api/sources"):
        assert p in paths, p


def test_analyze_group_photo(anon, datasets):
    data = jpeg_of(datasets / "group-photos" / "t1.jpg")
    r = anon.post("/api/analyze", files={"file": ("t1.jpg", data, "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["width"] == 1280 and len(body["faces"]) >= 5
    assert all(f["mask"] in ("with_mask", "without_mask", "mask_incorrect") for f in body["faces"])
    assert {"detect", "classify", "total"} <= set(body["timings_ms"])


@pytest.mark.parametrize("name, data, status, message", [
    ("empty.jpg", b"", 400, "empty"),
    ("notes.jpg", b"hello, this is text and not a photo" * 10, 415, "not an image"),
    ("broken.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 200, 422, "cannot be read"),
    ("huge.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * (2 * 1024 * 1024 + 10), 413, "over the limit"),
    ("wide.png", None, 413, "pixels is over the limit"),
])
def test_analyze_bad_uploads(anon, name, data, status, message):
    if data is None:
        data = png_bytes(3000, 2000)  # 6 MP, limit 4 MP; a small file
    r = anon.post("/api/analyze", files={"file": (name, data, "application/octet-stream")})
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    assert anon.get("/api/health").status_code == 200  # still serving


def test_analyze_without_file_and_oversized_body(anon):
    r = anon.post("/api/analyze")
    assert r.status_code == 422 and "file" in r.json()["detail"]
    # a body over the server's whole-request limit is refused before it is stored
    r = anon.post("/api/analyze", content=b"x" * 100,
                  headers={"content-length": str(10**10),
                           "content-type": "application/octet-stream"})
    assert r.status_code == 413


# -- authentication and CSRF -----------------------------------------------------------


@pytest.mark.parametrize("method, path", [
    ("get", "/api/people"), ("post", "/api/people"), ("get", "/api/people/ann"),
    ("patch", "/api/people/ann"), ("delete", "/api/people/ann"), ("post", "/api/people/ann/photos"),
    ("get", "/api/people/ann/thumbnail"), ("get", "/api/events"), ("get", "/api/events.csv"),
    ("get", "/api/stats"), ("post", "/api/sources"), ("delete", "/api/sources/1"),
])
def test_admin_routes_need_credentials(anon, method, path):
    r = getattr(anon, method)(path)
    assert r.status_code == 401, (path, r.text)
    r = getattr(anon, method)(path, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    # a wrong Bearer counts toward the login lockout
    anon.app.state.auth.clear_failures("testclient")


def test_pages_redirect_to_login(anon):
    for path in ("/people", "/events"):
        r = anon.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    assert anon.get("/").status_code == 200
    assert anon.get("/login").status_code == 200


def test_login_csrf_session_and_logout(anon):
    token = csrf_of(anon, "/login")
    # no CSRF token in the form
    r = anon.post("/login", data={"password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 403
    status, token = login(anon)
    assert status == 303
    assert anon.get("/people").status_code == 200
    assert anon.get("/api/people").status_code == 200  # reads need no CSRF header
    # state changes from a session need the CSRF header
    r = anon.delete("/api/people/nobody")
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
    r = anon.delete("/api/people/nobody", headers={"X-CSRF-Token": "forged"})
    assert r.status_code == 403
    r = anon.delete("/api/people/nobody", headers={"X-CSRF-Token": token})
    assert r.status_code == 404
    # a tampered session cookie is no session
    sid = anon.cookies.get("mw_session")
    anon.cookies.set("mw_session", sid[:-3] + "abc")
    assert anon.get("/api/people").status_code == 401
    anon.cookies.set("mw_session", sid)
    r = anon.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303
    anon.cookies.set("mw_session", sid)  # the old cookie no longer works
    assert anon.get("/api/people").status_code == 401


def test_a_login_survives_a_server_restart(anon, web_tmp):
    from fastapi.testclient import TestClient
    from tests.web.conftest import make_settings

    from maskwatch.web import create_app

    assert login(anon)[0] == 303
    cookie = anon.cookies.get("mw_session")
    with TestClient(create_app(make_settings(web_tmp))) as restarted:  # the same data folder
        restarted.cookies.set("mw_session", cookie)
        assert restarted.get("/api/people").status_code == 200
        restarted.cookies.set("mw_session", cookie[:-3] + "abc")
        assert restarted.get("/api/people").status_code == 401


def test_session_cookie_flags(anon):
    token = csrf_of(anon, "/login")
    r = anon.post("/login", data={"password": PASSWORD, "csrf_token": token},
                  follow_redirects=False)
    set_cookie = r.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie
    assert "secure" not in set_cookie  # plain http on localhost
    assert r.headers["location"] == "/"


def test_login_rate_limit(anon):
    auth = anon.app.state.auth
    try:
        for _ in range(3):
            assert login(anon, "wrong password")[0] == 401
        assert login(anon, "wrong password")[0] == 429
        assert login(anon)[0] == 429  # even the right one, until the window passes
    finally:
        auth.clear_failures("testclient")
    assert login(anon)[0] == 303


def test_open_redirect_refused(anon):
    token = csrf_of(anon, "/login")
    r = anon.post("/login",
                  data={"password": PASSWORD, "csrf_token": token, "next": "//evil.example/"},
                  follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"


# -- people -----------------------------------------------------------------------------


def test_people_crud_with_photos(anon, datasets):
    photo = jpeg_of(datasets / "identity-examples" / "examples" / "lin-manuel-miranda.png")
    files = [("photos", ("lmm.png", photo, "image/png"))]
    r = anon.post("/api/people", data={"name": "Lin", "thumbnail": "true"}, files=files,
                  headers=BEARER)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["created"] and body["templates"] == 5 and body["synthetic_templates"] == 4
    assert body["person"]["thumbnail"] == "/api/people/Lin/thumbnail"
    # taken name, bad name, photo without a face, bad upload
    assert anon.post("/api/people", data={"name": "Lin"}, files=files,
                     headers=BEARER).status_code == 409
    r = anon.post("/api/people", data={"name": "a/b"}, files=files, headers=BEARER)
    assert r.status_code == 422 and "cannot contain" in r.json()["detail"]
    r = anon.post("/api/people", data={"name": "Blank"},
                  files=[("photos", ("b.png", png_bytes(200, 200), "image/png"))],
                  headers=BEARER)
    assert r.status_code == 422 and "no face" in r.json()["detail"]
    r = anon.post("/api/people", data={"name": "Text"},
                  files=[("photos", ("t.jpg", b"not an image", "image/jpeg"))],
                  headers=BEARER)
    assert r.status_code == 415
    assert anon.post("/api/people", data={"name": "Nobody"}, headers=BEARER).status_code == 422

    people = anon.get("/api/people", headers=BEARER).json()
    assert [p["name"] for p in people] == ["Lin"]
    r = anon.get("/api/people/Lin/thumbnail", headers=BEARER)
    assert r.status_code == 200 and r.content[:3] == b"\xff\xd8\xff"
    r = anon.post("/api/people/Lin/photos", files=files, headers=BEARER)
    assert r.status_code == 200 and r.json()["person"]["templates"] == 10
    r = anon.patch("/api/people/Lin", json={"name": "Lin-Manuel"}, headers=BEARER)
    assert r.status_code == 200 and r.json()["name"] == "Lin-Manuel"
    assert anon.patch("/api/people/Lin", json={"name": "X"}, headers=BEARER).status_code == 404
    assert anon.patch("/api/people/Lin-Manuel", json={"nom": "X"},
                      headers=BEARER).status_code == 422
    assert anon.get("/api/people/Lin-Manuel", headers=BEARER).json()["templates"] == 10
    r = anon.delete("/api/people/Lin-Manuel", headers=BEARER)
    assert r.status_code == 200 and r.json() == {"removed": "Lin-Manuel", "templates": 10}
    assert anon.get("/api/people/Lin-Manuel", headers=BEARER).status_code == 404
    assert anon.get("/api/people", headers=BEARER).json() == []


def test_people_forms(anon, datasets):
    status, token = login(anon)
    assert status == 303
    photo = jpeg_of(datasets / "identity-examples" / "examples" / "alex-lacamoire.png")
    # a form without its CSRF token changes nothing
    r = anon.post("/people", data={"name": "Alex"},
                  files=[("photos", ("a.png", photo, "image/png"))], follow_redirects=False)
    assert r.status_code == 403
    r = anon.post("/people", data={"name": "Alex", "csrf_token": token},
                  files=[("photos", ("a.png", photo, "image/png"))], follow_redirects=True)
    assert r.status_code == 200 and "Enrolled Alex" in r.text
    assert re.search(r'<td class="name">Alex</td>', r.text)
    r = anon.post("/people/Alex/rename", data={"new_name": "Alex L", "csrf_token": token},
                  follow_redirects=True)
    assert "Renamed Alex to Alex L" in r.text
    r = anon.post("/people/Alex%20L/delete", data={"csrf_token": token, "confirm": ""},
                  follow_redirects=True)
    assert "Not deleted" in r.text and '<td class="name">Alex L</td>' in r.text
    r = anon.post("/people/Alex%20L/delete", data={"csrf_token": token, "confirm": "Alex L"},
                  follow_redirects=True)
    assert "Deleted Alex L" in r.text and "Nobody is enrolled yet" in r.text
    # errors come back as a message on the page, not a traceback
    r = anon.post("/people", data={"name": "Bad", "csrf_token": token},
                  files=[("photos", ("x.jpg", b"text", "image/jpeg"))], follow_redirects=True)
    assert r.status_code == 200 and "not an image" in r.text


# -- live WebSocket, events, statistics ----------------------------------------------------


def test_live_websocket_names_and_events(anon, datasets):
    frames = clip_frames(datasets, 90)
    photo = jpeg_of(datasets / "identity-examples" / "examples" / "lin-manuel-miranda.png")
    r = anon.post("/api/people", data={"name": "Lin"},
                  files=[("photos", ("l.png", photo, "image/png"))], headers=BEARER)
    assert r.status_code == 201
    try:
        with anon.websocket_connect("/ws/live") as ws:
            hello = ws.receive_json()
            assert hello["type"] == "hello" and hello["source"].startswith("browser:")
            results = send_frames(ws, frames[:60])
            assert all(r["width"] == 640 and r["height"] == 360 for r in results)
            assert sum(len(r["faces"]) for r in results) > 60
            assert all(f["track_id"] >= 1 and f["mask"] for r in results[10:] for f in r["faces"])
            names = {f.get("identity") for r in results for f in r["faces"]}
            assert "Lin" in names, names
            # a bad frame gets an error message, and the stream goes on
            ws.send_bytes((999).to_bytes(4, "big") + b"not a jpeg")
            err = ws.receive_json()
            assert err["seq"] == 999 and "not an image" in err["error"]
            ws.send_text("hello")
            assert "binary" in ws.receive_json()["error"]
            # deleting the person takes the name off live tracks at once
            assert anon.delete("/api/people/Lin", headers=BEARER).status_code == 200
            time.sleep(0.1)
            after = send_frames(ws, frames[60:75], first_seq=60)
            assert all(f.get("identity") is None for r in after for f in r["faces"])
    finally:
        anon.delete("/api/people/Lin", headers=BEARER)
    # the connection's tracks became events (written by the recorder when the stream closed)
    deadline = time.time() + 10
    total = 0
    while time.time() < deadline:
        body = anon.get("/api/events", headers=BEARER).json()
        total = body["total"]
        if total:
            break
        time.sleep(0.3)
    assert total >= 2
    ev = body["events"][0]
    assert ev["source"] == hello["source"] and ev["frames"] >= 3
    # removal deleted Lin's events: nobody is named any more
    assert all(e["identity"] != "Lin" for e in body["events"])

    page = anon.get("/api/events", params={"limit": 1, "offset": 1}, headers=BEARER).json()
    assert page["total"] == total and len(page["events"]) == 1
    unknown = anon.get("/api/events", params={"identity": ""}, headers=BEARER).json()
    assert unknown["total"] == total
    masked = anon.get("/api/events", params={"mask_state": "with_mask"}, headers=BEARER).json()
    assert masked["total"] < total
    assert anon.get("/api/events", params={"mask_state": "beard"},
                    headers=BEARER).status_code == 422
    assert anon.get("/api/events", params={"limit": 0}, headers=BEARER).status_code == 422
    assert anon.get("/api/events", params={"since": "yesterday"}, headers=BEARER).status_code == 422

    stats = anon.get("/api/stats", params={"bucket_s": 60}, headers=BEARER).json()
    assert stats["total"] == total and stats["unknown"] == total
    assert stats["buckets"] and sum(b["total"] for b in stats["buckets"]) == total
    assert hello["source"] in stats["sources"]
    assert anon.get("/api/stats", params={"bucket_s": 0}, headers=BEARER).status_code == 422

    csv_text = anon.get("/api/events.csv", headers=BEARER).text
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("id,source,track_id,started_iso") and len(lines) == total + 1

    # the dashboard page renders for the admin
    login(anon)
    assert "Mask compliance over time" in anon.get("/events").text


def test_websocket_refuses_other_origins(anon):
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect):
        with anon.websocket_connect("/ws/live", headers={"origin": "http://evil.example"}) as ws:
            ws.receive_json()


# -- server sources -----------------------------------------------------------------------


def test_sources_api(anon, datasets):
    # the web may not name files on the server
    r = anon.post("/api/sources",
                  json={"spec": str(datasets / "videos" / "short_hamilton_clip.mp4")},
                  headers=BEARER)
    assert r.status_code == 422 and "--source FILE" in r.json()["detail"]
    assert anon.post("/api/sources", json={"spec": "../../etc/passwd"},
                     headers=BEARER).status_code == 422
    assert anon.post("/api/sources", json={"spec": "ftp://host/x"},
                     headers=BEARER).status_code == 422
    # an unreachable URL is accepted and then reported as failed, the server keeps going
    r = anon.post("/api/sources", json={"spec": "http://127.0.0.1:9/stream.mjpg"}, headers=BEARER)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    deadline = time.time() + 20
    state = None
    while time.time() < deadline:
        state = {s["id"]: s for s in anon.get("/api/sources").json()}[sid]
        if state["state"] == "failed":
            break
        time.sleep(0.3)
    assert state["state"] == "failed" and "cannot open stream" in state["message"]
    assert anon.get(f"/stream/{sid}.jpg").status_code == 404
    assert anon.delete(f"/api/sources/{sid}", headers=BEARER).json() == {"removed": sid}
    assert anon.delete(f"/api/sources/{sid}", headers=BEARER).status_code == 404
    assert anon.get("/stream/77.mjpg").status_code == 404


def test_server_video_source_mjpeg(web_tmp, datasets):
    """A video file given at start (as --source) is analysed and served as MJPEG."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from tests.web.conftest import make_settings

    from maskwatch.web import create_app

    settings = make_settings(web_tmp / "src",
                             sources=[str(datasets / "videos" / "short_hamilton_clip.mp4")])
    with TestClient(create_app(settings)) as c:
        deadline = time.time() + 20
        while time.time() < deadline and c.get("/stream/1.jpg").status_code != 200:
            time.sleep(0.2)
        snap = c.get("/stream/1.jpg")
        assert snap.status_code == 200
        img = cv2.imdecode(np.frombuffer(snap.content, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (360, 640, 3)
        info = c.get("/api/sources").json()[0]
        assert (info["state"] in ("live", "finished")
                and info["spec"].endswith("short_hamilton_clip.mp4"))
        assert info["frames"] >= 1
        with c.stream("GET", "/stream/1.mjpg") as r:
            assert r.headers["content-type"].startswith("multipart/x-mixed-replace")
            chunk = b""
            for part in r.iter_bytes():
                chunk += part
                if chunk.count(b"--maskwatchframe") >= 2:
                    break
        assert b"Content-Type: image/jpeg" in chunk
        page = c.get("/").text
        assert '/stream/1.mjpg' in page


def _source_state(client, sid: str) -> dict:
    return {s["id"]: s for s in client.get("/api/sources").json()}[sid]


def _wait_source(client, sid: str, ok, timeout_s: float) -> dict:
    """Poll ``/api/sources`` until ``ok(state)`` or ``timeout_s`` seconds; the last state."""
    deadline = time.time() + timeout_s
    state = _source_state(client, sid)
    while not ok(state) and time.time() < deadline:
        time.sleep(0.2)
        state = _source_state(client, sid)
    return state


def _mjpeg_parts(data: bytes) -> list[bytes]:
    """The JPEGs of a ``/stream/{id}.mjpg`` body, in order (complete parts only)."""
    out = []
    for part in data.split(b"--maskwatchframe")[1:]:
        head, sep, body = part.partition(b"\r\n\r\n")
        length = re.search(rb"Content-Length: (\d+)", head)
        if sep and length and len(body) >= int(length.group(1)):
            out.append(body[: int(length.group(1))])
    return out


@pytest.mark.slow
def test_url_source_drops_and_comes_back(anon, datasets):
    """A camera URL that goes off the network for a while: the source shows it is
    reconnecting, the server keeps answering, and when the stream is back the source is
    live again and its MJPEG viewers get new frames without reconnecting themselves."""
    import threading

    from tests.mjpeg import MJPEGServer

    from maskwatch.web.sources import STALE_S

    photo = jpeg_of(datasets / "group-photos" / "t1.jpg")
    with MJPEGServer(frames_per_connection=None, connections=None, size=(320, 240),
                     interval_s=0.05) as cam:
        r = anon.post("/api/sources", json={"spec": cam.url}, headers=BEARER)
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        try:
            state = _wait_source(anon, sid, lambda s: s["state"] == "live" and s["frames"] >= 10,
                                 20)
            assert state["state"] == "live" and state["frames"] >= 10, state
            assert state["spec"] == cam.url and "320x240" in state["message"]

            # a viewer that stays connected through the outage
            viewer: dict = {"data": b"", "error": None}

            def watch() -> None:
                try:
                    with anon.stream("GET", f"/stream/{sid}.mjpg") as resp:
                        viewer["status"] = resp.status_code
                        for chunk in resp.iter_bytes():
                            viewer["data"] += chunk
                except Exception as exc:  # noqa: BLE001 - reported by the assertions below
                    viewer["error"] = exc

            thread = threading.Thread(target=watch, daemon=True)
            thread.start()
            deadline = time.time() + 10
            while len(_mjpeg_parts(viewer["data"])) < 2 and time.time() < deadline:
                time.sleep(0.1)
            assert len(_mjpeg_parts(viewer["data"])) >= 2, viewer

            cam.go_down()
            t_down = time.monotonic()
            state = _wait_source(anon, sid, lambda s: s["state"] != "live", STALE_S + 10)
            assert state["state"] == "reconnecting", state
            frames_down = state["frames"]
            parts_down = len(_mjpeg_parts(viewer["data"]))
            stale = anon.get(f"/stream/{sid}.jpg")
            assert stale.status_code == 200  # the last frame stays visible
            # the server keeps serving everything else meanwhile
            for _ in range(3):
                t0 = time.monotonic()
                assert anon.get("/api/health").status_code == 200
                assert time.monotonic() - t0 < 1.0
            r = anon.post("/api/analyze", files={"file": ("t1.jpg", photo, "image/jpeg")})
            assert r.status_code == 200 and len(r.json()["faces"]) >= 5
            assert anon.get("/").status_code == 200
            # it really tried to reconnect, and no frame came in while down
            deadline = time.time() + 10
            while cam.refused < 2 and time.time() < deadline:
                time.sleep(0.1)
            assert cam.refused >= 2
            state = _source_state(anon, sid)
            assert state["state"] == "reconnecting" and state["frames"] == frames_down, state
            # what the live page shows: no frame rate of a stream that sends nothing, and why
            assert (state["fps"] == 0 and "reconnecting in" in state["message"]
                    and "(attempt " in state["message"]), state
            served_down = cam.served

            cam.come_back()
            t_up = time.monotonic()
            state = _wait_source(anon, sid,
                                 lambda s: s["state"] == "live" and s["frames"] >= frames_down + 10,
                                 30)
            assert state["state"] == "live" and state["frames"] >= frames_down + 10, state
            assert cam.served == served_down + 1  # one new connection, not a loop of them
            back_s = time.monotonic() - t_up
            # the frame rate is that of the new connection (20 fps sent), not averaged over the
            # outage
            assert state["fps"] > 5 and "320x240" in state["message"], state
            # the viewer that stayed connected sees the new frames
            deadline = time.time() + 10
            while len(_mjpeg_parts(viewer["data"])) < parts_down + 5 and time.time() < deadline:
                time.sleep(0.1)
            parts = _mjpeg_parts(viewer["data"])
            assert len(parts) >= parts_down + 5, (len(parts), parts_down, viewer["error"])
            assert parts[-1] != stale.content
            img = cv2.imdecode(np.frombuffer(parts[-1], np.uint8), cv2.IMREAD_COLOR)
            assert img is not None and img.shape == (240, 320, 3)
            # and so does a new viewer
            with anon.stream("GET", f"/stream/{sid}.mjpg") as resp:
                data = b""
                for chunk in resp.iter_bytes():
                    data += chunk
                    if len(_mjpeg_parts(data)) >= 2:
                        break
            assert len(_mjpeg_parts(data)) >= 2
            print(f"source down {t_up - t_down:.1f} s, "
                  f"live again {back_s:.1f} s after the stream came back")
        finally:
            assert anon.delete(f"/api/sources/{sid}", headers=BEARER).status_code == 200
        # removing the source ends the viewer's stream
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert viewer["status"] == 200 and viewer["error"] is None


def test_retention_purges_old_events(anon):
    from maskwatch.events import Event

    svc = anon.app.state.service
    now = time.time()
    old = Event("a" * 32, "camera:9", 1, now - 40 * 86400, now - 40 * 86400 + 5, 50, "with_mask")
    recent = Event("b" * 32, "camera:9", 2, now - 3600, now - 3590, 50, "with_mask")
    assert svc.gallery.add_events([old, recent]) == 2
    assert svc.purge_events() == 1  # retention 30 days
    left = anon.get("/api/events", params={"source": "camera:9"}, headers=BEARER).json()
    assert [e["id"] for e in left["events"]] == ["b" * 32]


def test_events_that_cannot_be_judged_are_filtered_and_counted_apart(anon):
    from maskwatch.events import Event

    svc = anon.app.state.service
    now = time.time()
    frames = {"with_mask": 0, "without_mask": 0, "mask_incorrect": 0}
    evs = [Event(f"{k:032x}", "camera:7", k, now - 60, now - 50 + k, 20, state,
                 {**frames, **({state: 20} if state in frames else {})})
           for k, state in enumerate(["unknown", "unknown", "with_mask", "without_mask"], 1)]
    assert svc.gallery.add_events(evs) == 4
    body = anon.get("/api/events", params={"mask_state": "unknown", "source": "camera:7"},
                    headers=BEARER).json()
    assert body["total"] == 2 and {e["mask_state"] for e in body["events"]} == {"unknown"}
    stats = anon.get("/api/stats", params={"source": "camera:7"}, headers=BEARER).json()
    assert stats["by_mask"]["unknown"] == 2 and stats["total"] == 4
    assert stats["compliance"] == 0.5  # of the two judged events, one wears a mask
    assert stats["buckets"][0]["unknown"] == 2
    schema = anon.get("/openapi.json").json()
    assert "unknown" in json.dumps(schema["paths"]["/api/events"])


def test_web_app_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, maskwatch.web.app, maskwatch.web.service, maskwatch.web.sources\n"
            "print(','.join(m for m in ('torch', 'maskwatch.train', 'matplotlib') "
            "if m in sys.modules))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ""


# -- private servers: watching needs the login too ---------------------------------------


@pytest.mark.parametrize("host, private, expected", [
    ("127.0.0.1", None, False), ("::1", None, False), ("localhost", None, False),
    ("127.0.0.2", None, False), ("0.0.0.0", None, True), ("::", None, True),
    ("192.168.1.20", None, True), ("camera-box.lan", None, True),
    ("0.0.0.0", False, False), ("127.0.0.1", True, True),
])
def test_private_by_default_beyond_this_machine(host, private, expected):
    from maskwatch.web import WebSettings

    assert WebSettings(host=host, private=private).watching_needs_login() is expected


@pytest.fixture(scope="module")
def private_client(tmp_path_factory):
    import warnings

    from tests.web.conftest import make_settings

    from maskwatch.web import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    app = create_app(make_settings(tmp_path_factory.mktemp("private"), private=True))
    with TestClient(app) as c:
        yield c


def test_a_private_server_shows_no_face_or_name_without_the_login(private_client, datasets):
    from starlette.websockets import WebSocketDisconnect

    c = private_client
    c.cookies.clear()
    photo = jpeg_of(datasets / "group-photos" / "t1.jpg")
    r = c.get("/", follow_redirects=False)
    assert (r.status_code in (302, 303, 307)
            and r.headers["location"].startswith("/login")), r.headers
    assert c.post("/api/analyze",
                  files={"file": ("t1.jpg", photo, "image/jpeg")}).status_code == 401
    assert c.get("/api/sources").status_code == 401
    assert c.get("/stream/1.jpg").status_code == 401
    assert c.get("/stream/1.mjpg").status_code == 401
    with c.websocket_connect("/ws/live") as ws, pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_text()
    assert closed.value.code == 4401
    assert c.get("/api/health").status_code == 200  # says nothing about anyone
    assert c.get("/login").status_code == 200


def test_a_private_server_serves_the_admin(private_client, datasets):
    c = private_client
    c.cookies.clear()
    photo = jpeg_of(datasets / "group-photos" / "t1.jpg")
    r = c.post("/api/analyze", files={"file": ("t1.jpg", photo, "image/jpeg")}, headers=BEARER)
    assert r.status_code == 200 and len(r.json()["faces"]) >= 5
    assert c.get("/api/sources", headers=BEARER).status_code == 200
    with c.websocket_connect("/ws/live", headers=dict(BEARER)) as ws:
        assert json.loads(ws.receive_text())["type"] == "hello"
    status, _ = login(c)
    assert status in (302, 303)
    assert c.get("/").status_code == 200
    with c.websocket_connect("/ws/live") as ws:  # the session cookie
        assert json.loads(ws.receive_text())["type"] == "hello"
    c.cookies.clear()


def test_names_with_invisible_characters(anon):
    """A new name with a zero-width or direction character is refused (one sentence); a
    person stored under such a name before the rule can still be shown and deleted."""
    from urllib.parse import quote

    from maskwatch.gallery.records import Person, PersonRecord, Template, new_person_id

    files = [("photos", ("p.png", png_bytes(64, 64), "image/png"))]
    r = anon.post("/api/people", data={"name": "Ann\u200b"}, files=files, headers=BEARER)
    assert r.status_code == 422 and "U+200B" in r.json()["detail"], r.text
    r = anon.patch("/api/people/nobody", json={"name": "\u202eAnn"}, headers=BEARER)
    assert r.status_code == 422 and "U+202E" in r.json()["detail"], r.text
    gallery = anon.app.state.service.gallery
    old = "Zed\u200b"
    emb = np.ones(128, np.float32) / np.sqrt(128)
    gallery._write_people([PersonRecord(Person(new_person_id(), old, time.time(), 1),
                                        [Template("", emb, "old-embedder", "0")])], replace=False)
    path = "/api/people/" + quote(old, safe="")
    assert anon.get(path, headers=BEARER).json()["name"] == old
    r = anon.delete(path, headers=BEARER)
    assert r.status_code == 200 and r.json() == {"removed": old, "templates": 1}, r.text
    assert anon.get(path, headers=BEARER).status_code == 404
