"""``maskwatch serve --cluster``: server sources run as tasks on Dask workers.

Real parts only: a LocalCluster of two worker processes on 127.0.0.1 (``local:2``), a
SecantusDB server as the shared MongoDB store, a video file played in real time and a
local MJPEG camera. Checked: both sources run, each on its own worker, and reach the
page (state, worker, MJPEG frame, engine JSON); a person enrolled on the page during
the run is named by both workers; a worker SIGKILLed mid-run has its source resumed on
the other worker within 15 s, where the video left off; the events in the store match
what the runs handed over, none twice, and the dashboard counts every camera.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("distributed", reason="needs the [cluster] extra (Dask)")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from tests.mjpeg import MJPEGServer  # noqa: E402
from tests.web.conftest import BEARER, make_settings  # noqa: E402

from maskwatch.web import create_app  # noqa: E402

FPS = 15


def drifting(photo: Path, n: int) -> list[np.ndarray]:
    """640x480 frames of a portrait drifting slowly across a grey background."""
    face = cv2.imread(str(photo))
    face = cv2.resize(face, (240, int(240 * face.shape[0] / face.shape[1])))
    h, w = face.shape[:2]
    frames = []
    for t in range(n):
        frame = np.full((480, 640, 3), 90, np.uint8)
        x = int(200 + 60 * np.sin(t / 20))
        y = (480 - h) // 2
        frame[y:y + h, x:x + w] = face
        frames.append(frame)
    return frames


def clip_frames(datasets: Path) -> list[np.ndarray]:
    """The shared clip at 640x480, every other frame (15 frames/s)."""
    cap = cv2.VideoCapture(str(datasets / "videos" / "short_hamilton_clip.mp4"))
    frames = []
    ok, img = cap.read()
    while ok:
        frames.append(cv2.resize(img, (640, 480)))
        ok, img = cap.read()
    cap.release()
    return frames[::2]


def write_video(path: Path, frames: list[np.ndarray]) -> Path:
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (640, 480))
    for f in frames:
        out.write(f)
    out.release()
    return path


def wait_for(check, timeout: float, what: str, step: float = 0.2):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"not within {timeout:g} s: {what}")


def names_of(client: TestClient, sid: str) -> list[str]:
    r = client.get(f"/api/sources/{sid}/result")
    return [f.get("identity") for f in r.json()["faces"]] if r.status_code == 200 else []


def seconds_until_named(client: TestClient, name: str, timeout: float = 10) -> float:
    """Seconds until both sources (``"1"``, ``"2"``) name ``name`` (at most ``timeout``)."""
    began = time.monotonic()
    for sid in ("1", "2"):
        wait_for(lambda sid=sid: name in names_of(client, sid), timeout,
                 f"{name} named on source {sid}")
    return time.monotonic() - began


def test_two_workers_one_store_a_person_enrolled_mid_run_and_a_worker_killed(
        datasets, mongo, tmp_path):
    lin = datasets / "identity-examples" / "examples" / "lin-manuel-miranda.png"
    # the file: Lin for 12 s, then the shared clip (9 s); the camera: Lin, endlessly
    video = write_video(tmp_path / "lin-then-clip.mp4",
                        drifting(lin, 12 * FPS) + clip_frames(datasets))
    db = f"{mongo.url}/maskwatch"
    with MJPEGServer(frames=drifting(lin, 8 * FPS), frames_per_connection=None, connections=None,
                     interval_s=1 / FPS) as camera:
        app = create_app(make_settings(tmp_path, db=db, cluster="local:2",
                                       sources=[str(video), camera.url]))
        with TestClient(app) as client:
            sources = app.state.sources

            def live() -> list[dict]:
                infos = client.get("/api/sources").json()
                return infos if all(i["state"] == "live" and i["frames"] > 2
                                    for i in infos) else []

            infos = wait_for(live, 120, "both sources live")
            # placed by the scheduler, one per worker
            assert {i["id"] for i in infos} == {"1", "2"}
            assert all(i["worker"].startswith("tcp://127.0.0.1:") for i in infos)
            assert infos[0]["worker"] != infos[1]["worker"]
            frame = client.get("/stream/2.jpg")
            assert frame.status_code == 200 and frame.content[:2] == b"\xff\xd8"
            result = client.get("/api/sources/2/result").json()
            assert result["width"] == 640 and result["faces"]
            assert names_of(client, "1") and all(n is None for n in names_of(client, "1"))

            # enrolled on the page: both workers name her within a few seconds
            r = client.post("/api/people", headers=BEARER, data={"name": "Lin"},
                            files=[("photos", (lin.name, lin.read_bytes(), "image/png"))])
            assert r.status_code == 201, r.text
            named_s = seconds_until_named(client, "Lin")
            # renamed on the page: both workers use the new name
            r = client.patch("/api/people/Lin", headers=BEARER, json={"name": "Lin-Manuel"})
            assert r.status_code == 200, r.text
            renamed_s = seconds_until_named(client, "Lin-Manuel")
            print(f"named on both workers {named_s:.1f} s after the enrolment, renamed "
                  f"{renamed_s:.1f} s after the rename")

            # the worker of the video dies: it resumes on the other worker, where it was
            video_src = sources.get("1")
            old_worker, frame_at_kill = video_src.worker, video_src.latest["frame"]
            os.kill(video_src.pid, signal.SIGKILL)
            killed = time.monotonic()
            wait_for(lambda: video_src.worker != old_worker and video_src.state == "live"
                     and video_src.latest["frame"] > frame_at_kill, 15,
                     "the video resumed on another worker")
            resumed_s = time.monotonic() - killed
            assert video_src.restarts == 1 and len(video_src.events) == 2
            info = next(i for i in client.get("/api/sources").json() if i["id"] == "1")
            assert info["restarts"] == 1 and info["worker"] != old_worker
            # it went on from the frame it had reached, not from the start
            first_after = video_src.latest["frame"]
            assert first_after >= frame_at_kill - 2 * FPS, (first_after, frame_at_kill)

            wait_for(lambda: video_src.state == "finished", 90, "the video finished")
            camera_src = sources.get("2")
            assert client.delete("/api/sources/2", headers=BEARER).status_code == 200
            assert camera_src.state == "stopped"
            # the engines' writers write every 2 s: the dashboard then counts both cameras
            time.sleep(3.0)
            stats = client.get("/api/stats", headers=BEARER).json()
        print(f"resumed {resumed_s:.1f} s after the kill")

    from maskwatch.gallery import open_gallery

    gallery = open_gallery(db)
    try:
        events = list(gallery.iter_events())
    finally:
        gallery.close()
    ids = [e.id for e in events]
    assert len(ids) == len(set(ids)), "an event was recorded twice"
    by_source: dict[str, int] = {}
    for e in events:
        by_source[e.source] = by_source.get(e.source, 0) + 1
    assert set(by_source) == {video_src.event_name, camera_src.event_name}
    # the camera's worker lived: every event it handed over is in the store
    assert by_source[camera_src.event_name] == sum(camera_src.events) > 0
    # the killed run's events are there unless it died within the writer's 2 s of
    # handing them over; the resumed run's are all there
    assert video_src.events[1] <= by_source[video_src.event_name] <= sum(video_src.events)
    assert stats["total"] == len(events)
    assert any(e.identity == "Lin-Manuel" for e in events if e.source == camera_src.event_name)


def _dask_process(*args: str, log: Path) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("dask")
    return subprocess.Popen([str(exe), *args], stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            env=dict(os.environ, DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL="10s"))


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


def test_sources_added_on_the_page_and_the_scheduler_lost_and_back(tmp_path):
    """Sources added through the API run on a real ``dask scheduler`` and ``dask worker``;
    one that cannot be opened fails once, and stays failed. The scheduler is SIGKILLed:
    the page keeps serving and says so; once a scheduler answers at the address again,
    the source is submitted again and runs."""
    from tests.mongo_server import free_port

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    log = tmp_path / "dask.log"
    scheduler_args = ("scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard")
    worker_args = ("worker", address, "--host", "127.0.0.1", "--nthreads", "4",
                   "--no-dashboard", "--name", "w1")
    scheduler = _dask_process(*scheduler_args, log=log)
    worker = _dask_process(*worker_args, log=log)
    procs = [scheduler, worker]
    try:
        with MJPEGServer(frames_per_connection=None, connections=None,
                         interval_s=1 / FPS) as camera:
            app = create_app(make_settings(tmp_path, cluster=address))
            with TestClient(app) as client:
                for spec in (camera.url, f"http://127.0.0.1:{free_port()}/gone.mjpg"):
                    r = client.post("/api/sources", headers=BEARER, json={"spec": spec})
                    assert r.status_code == 201, r.text

                def state() -> dict:
                    return client.get("/api/sources").json()[0]

                gone = wait_for(lambda: (s := client.get("/api/sources").json()[1])["state"]
                                == "failed" and s, 60, "the unreachable source failed")
                assert "cannot open stream" in gone["message"], gone

                wait_for(lambda: state()["state"] == "live" and state()["frames"] > 3, 90,
                         "the source live on the cluster")
                _stop(scheduler)
                info = wait_for(lambda: (s := state())["state"] == "waiting" and s, 20,
                                "the source says the scheduler is lost")
                assert "lost the Dask scheduler" in info["message"], info
                assert client.get("/").status_code == 200  # the page keeps serving
                frames = info["frames"]

                scheduler = _dask_process(*scheduler_args, log=log)
                procs.append(scheduler)
                info = wait_for(lambda: (s := state())["state"] == "starting" and s, 30,
                                "the source submitted again")
                # A worker whose scheduler is gone closes (its supervisor starts it again)
                assert "no worker" in info["message"], info
                _stop(worker)
                worker = _dask_process(*worker_args, log=log)
                procs.append(worker)
                wait_for(lambda: (s := state())["state"] == "live" and s["frames"] > frames + 3,
                         90, "the source live again")
                # the failed one was not submitted again after the reconnection
                gone_src = app.state.sources.get("2")
                assert gone_src.state == "failed" and len(gone_src.events) == 1
    finally:
        for p in procs:
            _stop(p)
