"""Live frame rate while the store is down or locked (issue 15, defects 3 and 9).

Starts ``maskwatch serve`` in a subprocess and sends the shared clip's frames over
``/ws/live`` (one frame in flight, as ``tests/web/live_client.py`` does), measuring
frames/s in windows of ``--seconds``:

1. MongoDB: a real SecantusDB server (``tests/mongo_server.py``) as the gallery; windows
   with it up, killed (SIGKILL), up again (started on the same port), ``--rounds`` times.
2. SQLite: the default store; a second connection holds the file's write lock
   (``BEGIN IMMEDIATE``) for ``--hold`` seconds while a person is enrolled through the
   API; windows before, while the enrolment waits for the lock (from 1.5 s after it was
   posted, its own decoding and mask drawing taking about a second of CPU lock or not,
   to the release of the lock), and after.

    python benchmarks/bench_outage.py
    python benchmarks/bench_outage.py --seconds 8 --rounds 3

Target (issue 15): live frames/s with MongoDB down at least 80% of the rate with it up.
Everything runs on this machine; other load on its cores shows as noise, hence the
interleaved windows and the load average printed with the results.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the tests' server, SecantusDB and live client helpers
from tests.mongo_server import MongoServer  # noqa: E402
from tests.web.browser import running_server  # noqa: E402
from tests.web.live_client import LiveClient, clip_frames  # noqa: E402

PASSWORD = "bench-password"
PHOTO = Path("identity-examples") / "examples" / "lin-manuel-miranda.png"


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def enrol(url: str, name: str, photo: Path) -> tuple[int, float]:
    """POST one photo to /api/people; (HTTP status, seconds it took)."""
    import httpx

    t0 = time.monotonic()
    r = httpx.post(f"{url}/api/people", data={"name": name}, timeout=60,
                   headers={"Authorization": f"Bearer {PASSWORD}"},
                   files=[("photos", (photo.name, photo.read_bytes(), "image/png"))])
    return r.status_code, time.monotonic() - t0


def bench_mongo(frames: list[bytes], tmp: Path, seconds: float,
                rounds: int) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {"up": [], "down": []}
    home = tmp / "home-mongo"
    home.mkdir()
    mongo = MongoServer(tmp / "secantus")
    mongo.start()
    try:
        with running_server(home, PASSWORD, "-q", "--db", f"{mongo.url}/maskwatch") as server, \
                LiveClient(server.url) as live:
            live.send(frames[:20])  # warm-up
            for r in range(rounds):
                fps, _ = live.fps(frames, seconds)
                rates["up"].append(fps)
                print(f"  round {r + 1}: MongoDB up       {fps:6.1f} frames/s", flush=True)
                mongo.stop(kill=True)
                fps, _ = live.fps(frames, seconds)
                rates["down"].append(fps)
                print(f"  round {r + 1}: MongoDB killed   {fps:6.1f} frames/s", flush=True)
                mongo.start()
            fps, _ = live.fps(frames, seconds)
            rates["up"].append(fps)
            print(f"  MongoDB up again          {fps:6.1f} frames/s", flush=True)
    finally:
        mongo.stop(kill=True)
    return rates


def bench_sqlite(frames: list[bytes], tmp: Path, seconds: float, hold: float,
                 photo: Path) -> dict:
    home = tmp / "home-sqlite"
    home.mkdir()
    db = home / "gallery.sqlite3"
    out: dict = {}
    with running_server(home, PASSWORD, "-q", "--db", str(db)) as server, \
            LiveClient(server.url) as live:
        live.send(frames[:20])
        out["before"], _ = live.fps(frames, seconds)
        locked = threading.Event()

        def hold_lock() -> None:
            con = sqlite3.connect(db, isolation_level=None)
            try:
                con.execute("BEGIN IMMEDIATE")
                locked.set()
                time.sleep(hold)
                con.execute("ROLLBACK")
            finally:
                con.close()

        def do_enrol() -> None:
            out["status"], out["enrol_s"] = enrol(server.url, "Lin", photo)

        holder = threading.Thread(target=hold_lock)
        holder.start()
        locked.wait(10)
        enroller = threading.Thread(target=do_enrol)
        start = time.monotonic() + 1.5
        enroller.start()
        answered = k = 0
        while holder.is_alive():  # frames answered from 1.5 s after the post to the release
            live.send([frames[k % len(frames)]])
            k += 1
            answered += time.monotonic() >= start
        out["during"] = answered / max(time.monotonic() - start, 1e-3)
        enroller.join(60)
        holder.join(60)
        out["after"], _ = live.fps(frames, seconds)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default=str(REPO.parent / "shared" / "datasets"))
    ap.add_argument("--seconds", type=float, default=5.0,
                    help="seconds per measured window (default 5)")
    ap.add_argument("--rounds", type=int, default=2, help="MongoDB up/killed rounds (default 2)")
    ap.add_argument("--hold", type=float, default=8.0,
                    help="seconds the SQLite write lock is held (default 8)")
    args = ap.parse_args()
    datasets = Path(args.datasets)
    frames = clip_frames(datasets, 60)
    if not frames:
        print(f"no clip at {datasets / 'videos'}: pass --datasets", file=sys.stderr)
        return 2
    print(f"load average before: {load_average()}")
    with tempfile.TemporaryDirectory(prefix="maskwatch-outage-") as t:
        tmp = Path(t)
        print("MongoDB gallery, live WebSocket (one frame in flight):")
        m = bench_mongo(frames, tmp, args.seconds, args.rounds)
        print("SQLite gallery, an enrolment waiting on another connection's write lock:")
        s = bench_sqlite(frames, tmp, args.seconds, args.hold, datasets / PHOTO)
    up, down = statistics.median(m["up"]), statistics.median(m["down"])
    base = (s["before"] + s["after"]) / 2
    print(f"  before {s['before']:.1f}, while the enrolment waits {s['during']:.1f}, "
          f"after {s['after']:.1f} frames/s; enrolment: HTTP {s['status']} in {s['enrol_s']:.1f} s")
    print(f"load average after: {load_average()}")
    print(f"MongoDB: median up {up:.1f} frames/s, median killed {down:.1f} frames/s: "
          f"{100 * down / up:.0f}% (target >= 80%)")
    print(f"SQLite lock: {s['during']:.1f} vs {base:.1f} frames/s: {100 * s['during'] / base:.0f}% "
          f"(target >= 80%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
