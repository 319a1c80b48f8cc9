"""A store outage never slows live analysis (issue 15, defects 3 and 9).

Everything here runs against real processes: ``maskwatch serve`` under uvicorn on
127.0.0.1 (``running_server``), a SecantusDB server killed with SIGKILL and started
again on the same port with the same data (``MongoServer``), live frames of the shared
clip over the WebSocket (``LiveClient``), and a second SQLite connection holding the
gallery file's write lock. Two cores are shared with other work, so every frame rate
is compared with one measured in the same test, on the same server, just before.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import cv2
import pytest
from tests.mongo_server import MongoServer
from tests.web.browser import running_server
from tests.web.conftest import BEARER, PASSWORD
from tests.web.live_client import LiveClient, clip_frames

pytestmark = pytest.mark.slow

#: Seconds each frame rate is measured over.
WINDOW_S = 5.0
#: Seconds of each window of the MongoDB tests (up, killed, up, killed, up).
MONGO_WINDOW_S = 4.0
#: Rate with the store down (or locked) relative to the rate with it up: the issue's target.
MIN_RATIO = 0.8


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


def _enrol(url: str, name: str, photo: Path, timeout: float = 60.0):
    import httpx

    return httpx.post(f"{url}/api/people", data={"name": name}, headers=BEARER, timeout=timeout,
                      files=[("photos", (photo.name, photo.read_bytes(), "image/png"))])


def _names(answers: list[dict]) -> set[str]:
    return {f["identity"] for a in answers for f in a.get("faces", []) if f.get("identity")}


def _sources(url: str) -> dict:
    import httpx

    return httpx.get(f"{url}/api/sources", timeout=10).json()[0]


def _up_and_down(mongo: MongoServer, rate) -> tuple[float, float, str]:
    """``rate()`` measured with MongoDB up, killed, up, killed, up (started again on
    the same port each time): (mean rate up, mean rate down, the rates as text).
    Interleaved, so that other load on the shared cores weighs on both."""
    up, down = [rate()], []
    for _ in range(2):
        mongo.stop(kill=True)
        down.append(rate())
        mongo.start()
        up.append(rate())
    text = (f"up {', '.join(f'{r:.1f}' for r in up)}; killed {', '.join(f'{r:.1f}' for r in down)} "
            f"frames/s")
    return sum(up) / len(up), sum(down) / len(down), text


def test_live_frame_rate_holds_while_mongodb_is_down(tmp_path, mongo, datasets):
    """MongoDB killed in the middle of a live session: frames/s stays at least 80% of
    the rate with it up (measured up, killed, up, killed, up); once it is back, a person
    enrolled through the API is recognised on the live stream within seconds."""
    frames = clip_frames(datasets, 60)
    photo = datasets / "identity-examples" / "examples" / "lin-manuel-miranda.png"
    with running_server(_home(tmp_path), PASSWORD, "--db", f"{mongo.url}/maskwatch") as server, \
            LiveClient(server.url) as live:
        live.send(frames[:10])  # warm up: the first frames build the tracker's state
        up, down, rates = _up_and_down(mongo, lambda: live.fps(frames, MONGO_WINDOW_S)[0])
        print(f"live WebSocket: {rates}")
        assert down >= MIN_RATIO * up, rates

        r = _enrol(server.url, "Lin", photo)
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 5.0
        seen: set[str] = set()
        while "Lin" not in seen and time.monotonic() < deadline:
            seen |= _names(live.send(frames[:20]))
        assert "Lin" in seen, f"Lin not recognised within 5 s of the enrolment: {seen}"


def test_server_file_source_advances_while_mongodb_is_down(tmp_path, mongo, datasets):
    """A video file read on the server (``--source``) goes on while MongoDB is killed at
    least at 80% of the rate it has with the store up (up, killed, up, killed, up)."""
    # A file plays at its own frame rate and catches up after a slow spell, which would
    # lift the windows that follow one: written at 240 frames/s it is read as fast as the
    # engine goes, so every window measures the engine. Its content is the clip's first
    # 60 frames over and over (as the live tests send them), so that every window holds
    # the same faces; 2400 frames last through the start-up and five windows at up to
    # about 80 frames/s.
    video = tmp_path / "looped_clip.mp4"
    cap = cv2.VideoCapture(str(datasets / "videos" / "short_hamilton_clip.mp4"))
    clip = [cap.read()[1] for _ in range(60)]
    cap.release()
    h, w = clip[0].shape[:2]
    out = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 240.0, (w, h))
    for _ in range(40):
        for frame in clip:
            out.write(frame)
    out.release()

    with running_server(_home(tmp_path), PASSWORD, "--db", f"{mongo.url}/maskwatch",
                        "--source", str(video)) as server:
        deadline = time.monotonic() + 20
        while _sources(server.url)["frames"] < 10 and time.monotonic() < deadline:
            time.sleep(0.2)

        def rate() -> float:
            f0, t0 = _sources(server.url)["frames"], time.monotonic()
            time.sleep(MONGO_WINDOW_S)
            return (_sources(server.url)["frames"] - f0) / (time.monotonic() - t0)

        up, down, rates = _up_and_down(mongo, rate)
        print(f"file source: {rates}")
        assert up > 2, rates
        assert down >= MIN_RATIO * up, rates
        assert _sources(server.url)["state"] == "live", "the file ended before the last window"


def test_enrolment_waiting_on_a_locked_sqlite_file_does_not_stall_live_frames(tmp_path, datasets):
    """Another connection holds the SQLite gallery's write lock for 8 s while a person
    is enrolled: live frames/s while the enrolment waits for the lock stays at least 80%
    of the rate before and after, and the enrolment succeeds once the lock is released
    (the busy timeout is 10 s).

    The window runs from 1.5 s after the enrolment is posted to the release of the lock:
    the enrolment's own work (decoding, drawing synthetic masks, about 0.1 s of models)
    takes about a second of the two shared cores, with or without a lock, and is not
    what is measured here."""
    frames = clip_frames(datasets, 60)
    photo = datasets / "identity-examples" / "examples" / "lin-manuel-miranda.png"
    home = _home(tmp_path)
    db = home / "gallery.sqlite3"
    hold_s = 8.0
    with running_server(home, PASSWORD, "--db", str(db)) as server, LiveClient(server.url) as live:
        live.send(frames[:10])
        before, _ = live.fps(frames, WINDOW_S)

        locked = threading.Event()
        released: list[float] = []

        def hold_lock() -> None:
            con = sqlite3.connect(db, isolation_level=None)
            try:
                con.execute("BEGIN IMMEDIATE")  # the write lock, as another process would take it
                locked.set()
                time.sleep(hold_s)
                con.execute("ROLLBACK")
                released.append(time.monotonic())
            finally:
                con.close()

        answer: dict = {}

        def enrol() -> None:
            r = _enrol(server.url, "Lin", photo)
            answer.update(status=r.status_code, body=r.json(), at=time.monotonic())

        holder = threading.Thread(target=hold_lock)
        holder.start()
        assert locked.wait(10)
        enroller = threading.Thread(target=enrol)
        start = time.monotonic() + 1.5
        enroller.start()
        answered = k = 0
        while holder.is_alive():  # frames answered from 1.5 s after the post to the release
            live.send([frames[k % len(frames)]])
            k += 1
            answered += time.monotonic() >= start
        during = answered / max(time.monotonic() - start, 1e-3)
        enroller.join(60)
        holder.join(60)
        after, _ = live.fps(frames, WINDOW_S)
        rates = (f"before {before:.1f}, while the enrolment waits on the lock {during:.1f}, "
                 f"after {after:.1f} frames/s")
        print(rates)
        assert during >= MIN_RATIO * (before + after) / 2, rates
        assert answer.get("status") == 201, answer
        assert answer["at"] >= released[0] - 0.05, "the enrolment did not wait for the lock"
        seen: set[str] = set()
        for k in range(0, len(frames), 10):  # the stream looks faces up again on the change
            seen |= _names(live.send(frames[k:k + 10]))
            if "Lin" in seen:
                break
        print(f"named after {k + 10} frames")
        assert "Lin" in seen, seen


def test_server_starts_with_mongodb_down_and_recognises_once_it_is_back(tmp_path, mongo, datasets):
    """A server started while MongoDB is down serves live frames (everyone unknown);
    when MongoDB is back, an enrolment through the API is recognised."""
    frames = clip_frames(datasets, 30)
    photo = datasets / "identity-examples" / "examples" / "lin-manuel-miranda.png"
    mongo.stop(kill=True)
    with running_server(_home(tmp_path), PASSWORD, "--db", f"{mongo.url}/maskwatch") as server, \
            LiveClient(server.url) as live:
        answers = live.send(frames)
        assert sum(len(a["faces"]) for a in answers) > 30 and not _names(answers)
        r = _enrol(server.url, "Lin", photo)
        assert r.status_code == 503 and "cannot be reached" in r.json()["detail"], r.text
        mongo.start()
        r = _enrol(server.url, "Lin", photo)
        assert r.status_code == 201, r.text
        assert "Lin" in _names(live.send(frames)), "Lin not recognised after the enrolment"
