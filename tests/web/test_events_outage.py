"""No event lost, none recorded twice, across store outages (issue 15, defect 4 and the
"gallery file deleted" half of 9).

Everything here runs against real processes: ``maskwatch serve`` under uvicorn on
127.0.0.1 (``running_server``), a SecantusDB server killed with SIGKILL and started again
on the same port with the same data (``MongoServer``), live sessions of the shared clip
over the WebSocket (``LiveClient``). The expected events are counted from the server's
own answers: one per track seen in at least ``MIN_FRAMES`` frames of a session.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections import Counter
from pathlib import Path

import pytest
from tests.web.browser import running_server
from tests.web.conftest import BEARER, PASSWORD
from tests.web.live_client import LiveClient, clip_frames

from maskwatch.events import SPOOL_NAME, Event
from maskwatch.gallery import open_gallery

pytestmark = pytest.mark.slow

#: ``events_from_tracks``' default: shorter tracks are not events.
MIN_FRAMES = 3
#: Seconds the store stays down while sessions end (the issue's figure).
OUTAGE_S = 10.0
#: Live sessions ended during the outage.
SESSIONS = 3


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return home


def _session(url: str, frames: list[bytes]) -> tuple[str, int]:
    """One live session, ended by the client; (its source, the tracks it must record)."""
    with LiveClient(url) as client:
        answers = client.send(frames)
    hits = Counter(f["track_id"] for a in answers for f in a.get("faces", []) if "track_id" in f)
    return str(client.source), sum(1 for n in hits.values() if n >= MIN_FRAMES)


def _stored(db: str) -> list[Event]:
    g = open_gallery(db)
    try:
        return list(g.iter_events(until=time.time() + 3600))
    finally:
        g.close()


def _wait_for(db: str, expected: dict[str, int], timeout: float) -> list[Event]:
    """The store's events once every session has at least its expected count (or at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            events = _stored(db)
        except Exception:  # noqa: BLE001 - the store may still be starting
            events = []
        have = Counter(e.source for e in events)
        if all(have[s] >= n for s, n in expected.items()) or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


def _check_exact(events: list[Event], expected: dict[str, int]) -> None:
    """Every expected event is stored once: per source the count of tracks, distinct ids,
    no (source, track_id) twice, and nothing from other sources."""
    have = Counter(e.source for e in events)
    assert dict(have) == expected, f"events per session {dict(have)}, tracks per session {expected}"
    assert len({e.id for e in events}) == len(events)
    assert len({(e.source, e.track_id) for e in events}) == len(events)


def test_events_survive_a_mongodb_outage_spanning_session_ends(tmp_path, mongo, datasets):
    """MongoDB killed, several live sessions end during a 10 s outage, MongoDB back on
    the same port: the store holds exactly one event per track of every session."""
    frames = clip_frames(datasets, 60)
    db = f"{mongo.url}/maskwatch"
    expected: dict[str, int] = {}
    with running_server(_home(tmp_path), PASSWORD, "--db", db) as server:
        source, n = _session(server.url, frames)  # the store up: a baseline
        expected[source] = n
        # The baseline's events are in the store before the crash, and on its disk:
        # SecantusDB 0.7.0b3 loses the last write it acknowledged, even journaled
        # (j: true), when killed within about 0.5 s of it (measured: 3 of 3 events
        # lost in 4 of 4 tries; kept when another write follows or 0.5 s pass).
        # Real MongoDB keeps a j: true write; this test is about the outage, not that.
        _wait_for(db, {source: n}, timeout=30.0)
        time.sleep(1.0)
        mongo.stop(kill=True)
        down_at = time.monotonic()
        for _ in range(SESSIONS):
            source, n = _session(server.url, frames)
            expected[source] = n
        ended_in_outage = time.monotonic() - down_at
        time.sleep(max(0.0, OUTAGE_S - ended_in_outage))
        outage = time.monotonic() - down_at
        mongo.start()
        events = _wait_for(db, expected, timeout=60.0)
        tracks = sum(expected.values())
        print(f"events recorded vs tracks across a {outage:.1f} s MongoDB outage "
              f"spanning {SESSIONS} session ends ({ended_in_outage:.1f} s in): "
              f"{len(events)}/{tracks}")
        assert ended_in_outage < outage and all(expected.values())
        _check_exact(events, expected)


def test_events_pending_at_sigterm_are_spooled_and_written_after_a_restart(tmp_path, mongo,
                                                                           datasets):
    """The server stopped (SIGTERM) while MongoDB is still down: the events wait in the
    data folder (mode 0600), and the next server on the same home writes them, once,
    and removes the file."""
    frames = clip_frames(datasets, 60)
    db = f"{mongo.url}/maskwatch"
    home = _home(tmp_path)
    expected: dict[str, int] = {}
    with running_server(home, PASSWORD, "--db", db) as server:
        mongo.stop(kill=True)
        for _ in range(2):
            source, n = _session(server.url, frames)
            expected[source] = n
    spool = home / SPOOL_NAME
    assert spool.is_file(), f"no {SPOOL_NAME} in the data folder after SIGTERM with the store down"
    assert stat.S_IMODE(spool.stat().st_mode) == 0o600
    assert len(spool.read_text().splitlines()) == sum(expected.values()) > 0
    mongo.start()
    assert _stored(db) == []  # nothing was written while it was down
    with running_server(home, PASSWORD, "--db", db):
        events = _wait_for(db, expected, timeout=60.0)
        deadline = time.monotonic() + 10
        while spool.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not spool.exists(), "the spool is still there after its events were written"
    _check_exact(_stored(db), expected)
    assert len(events) == sum(expected.values())


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def test_deleted_gallery_file_is_an_error_and_events_wait_for_it(tmp_path, datasets):
    """The SQLite gallery file deleted under a running server: the next enrolment is a
    503 saying so, nothing is written to the deleted file, the file is not silently
    re-created, and once it is put back the events of a session ended meanwhile are
    written to it (once) and enrolment works again."""
    import httpx

    frames = clip_frames(datasets, 60)
    home = _home(tmp_path)
    db = home / "gallery.sqlite3"
    wal = Path(f"{db}-wal")
    photos = datasets / "identity-examples" / "examples"

    def enrol(name: str, photo: str) -> httpx.Response:
        p = photos / photo
        return httpx.post(f"{server.url}/api/people", data={"name": name}, headers=BEARER,
                          timeout=120, files=[("photos", (p.name, p.read_bytes(), "image/png"))])

    with running_server(home, PASSWORD, "--db", str(db)) as server:
        r = enrol("Lin", "lin-manuel-miranda.png")
        assert r.status_code == 201, r.text
        kept = tmp_path / "kept.sqlite3"
        os.link(db, kept)  # the same file under another name, to look at it and to put it back
        before = (_digest(kept), _digest(wal))
        db.unlink()

        r = enrol("Alex", "alex-lacamoire.png")
        assert r.status_code == 503, r.text
        detail = r.json()["detail"]
        assert (f"the gallery file {db} was deleted or replaced "
                "while maskwatch was running") in detail
        source, n = _session(server.url, frames)
        assert n > 0
        r = httpx.get(f"{server.url}/api/events", headers=BEARER, timeout=30)
        assert r.status_code == 503 and "deleted or replaced" in r.json()["detail"]
        time.sleep(3.0)  # the event writer tries (and fails) at least once
        assert (_digest(kept), _digest(wal)) == before, "something was written to the deleted file"
        assert not db.exists(), "a new gallery file was created under the running server"

        os.rename(kept, db)  # put it back: the same file again
        events = _wait_for(str(db), {source: n}, timeout=40.0)
        _check_exact([e for e in events if e.source == source], {source: n})
        r = enrol("Alex", "alex-lacamoire.png")
        assert r.status_code == 201, r.text
        names = {p["name"] for p in httpx.get(f"{server.url}/api/people", headers=BEARER,
                                              timeout=30).json()}
        assert names == {"Lin", "Alex"}
