"""events_from_tracks, EventRecorder and the CSV export, on tracks from a real FaceTracker
and a real gallery store."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import numpy as np
import pytest

from maskwatch.events import (
    CSV_COLUMNS,
    SPOOL_NAME,
    Event,
    EventRecorder,
    EventSpool,
    EventWriter,
    events_from_tracks,
    events_to_csv,
    new_event_id,
    parse_duration,
    parse_time,
    store_key,
)
from maskwatch.gallery import Template, open_gallery
from maskwatch.gallery.sqlite import SQLiteGallery
from maskwatch.tracking import FaceTracker
from maskwatch.types import Faces

NOW = 1_800_000_000.0
WITH, WITHOUT, BELOW = [0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]


def run_tracks(frames: int = 30, *, t0: float = 100.0, fps: float = 10.0) -> list:
    """Three faces through a real tracker; returns its ended tracks (ids 1, 2, 3).

    Track 1 (left): 30 frames, with_mask for 20 then classified without_mask, named Ann.
    Track 2 (right): 30 frames, never classified, unknown (best similarity 0.2).
    Track 3 (middle): 2 frames only (noise), from frame 5.
    """
    tracker = FaceTracker(max_missed=2, switch_frames=1, switch_margin=0.1, ema=1.0)
    ended = []
    for f in range(frames):
        boxes = [[10 + f, 10, 60 + f, 60], [300, 10, 350, 60]]
        if f in (5, 6):
            boxes.append([150, 150, 200, 200])
        faces = tracker.update(Faces(boxes=boxes), frame_index=f, timestamp=t0 + f / fps)
        ids = faces.track_ids.tolist()
        tracker.update_mask(ids[0], np.array(WITH if f < 20 else WITHOUT), f)
        tracker.set_identity(ids[0], "Ann" if f % 3 == 0 else None, 0.6 + f / 1000, f)
        tracker.set_identity(ids[1], None, 0.2, f)
        ended += tracker.pop_ended()
    return ended + tracker.end_all()


def test_events_from_real_tracks():
    tracks = run_tracks()
    assert sorted(t.track_id for t in tracks) == [1, 2, 3]
    events = events_from_tracks(tracks, "file:clip.mp4", clock=lambda: NOW)
    by_track = {e.track_id: e for e in events}
    assert set(by_track) == {1, 2}  # the 2-frame track is noise
    a, b = by_track[1], by_track[2]
    assert a.source == b.source == "file:clip.mp4"
    assert a.frames == 30 and a.identity == "Ann" and a.best_similarity == pytest.approx(0.627)
    # frame 20, whose classification switched the label, is counted as it is drawn: under
    # the new label
    assert a.mask_frames == {"with_mask": 20, "without_mask": 10, "mask_incorrect": 0,
                             "unknown": 0}
    assert a.mask_state == "with_mask"  # dominant over its life, not its last label
    assert b.identity is None and b.best_similarity == pytest.approx(0.2)
    assert b.mask_state is None and sum(b.mask_frames.values()) == 0
    # both ended at the last frame (video time 102.9 s): anchored to the clock
    assert a.ended == b.ended == NOW
    assert (a.duration == pytest.approx(2.9, abs=1e-6)
            and a.started == pytest.approx(NOW - 2.9, abs=1e-6))
    assert len({a.id, b.id}) == 2 and len(a.id) == 32
    d = a.to_dict()
    assert d["duration_s"] == pytest.approx(2.9) and d["mask_frames"]["without_mask"] == 10
    assert events_from_tracks(tracks, "x", clock=lambda: NOW, min_frames=31) == []
    assert {e.track_id for e in events_from_tracks(tracks, "x", min_frames=1)} == {1, 2, 3}


def test_events_of_faces_that_cannot_be_judged(gallery):
    """A track shown as cannot judge on most of its frames is an ``unknown`` event, kept
    apart from compliance; a track judged on most of them keeps its label."""
    tracker = FaceTracker()
    dark_then_lit, lit_then_dark = [10, 10, 60, 60], [300, 10, 350, 60]
    for f in range(12):
        faces = tracker.update(Faces(boxes=[dark_then_lit, lit_then_dark]), frame_index=f,
                               timestamp=100 + f / 10, judgeable=[f >= 9, f < 4])
        for tid, due in zip(faces.track_ids.tolist(), tracker.due(faces, f, 10), strict=True):
            if due:
                tracker.update_mask(tid, np.array(WITH), f)
    tracks = tracker.end_all()
    events = {e.track_id: e for e in events_from_tracks(tracks, "camera:0", clock=lambda: NOW)}
    dark, lit = events[1], events[2]
    # track 1: dark for 9 frames, then lit: shown with its label from frame 10 (held 2 frames)
    assert tracks[0].mask_counts == {"with_mask": 2, "without_mask": 0, "mask_incorrect": 0,
                                     "unknown": 10}
    assert dark.mask_state == "unknown" and dark.frames == 12
    assert dark.mask_frames == {"with_mask": 2, "without_mask": 0, "mask_incorrect": 0,
                                "unknown": 10}  # its frames shown as cannot judge
    # track 2: judged for 5 frames (4 lit plus the first dark one), then 7 cannot judge
    assert lit.mask_state == "unknown" and lit.mask_frames["with_mask"] == 5
    assert gallery.add_events([dark, lit]) == 2
    stats = gallery.event_stats()
    assert stats["by_mask"]["unknown"] == 2 and stats["compliance"] is None
    [back], total = gallery.query_events(mask_state="unknown", limit=1)
    assert total == 2 and back.mask_state == "unknown"
    tracker = FaceTracker()  # judged on most frames: its label, not unknown
    for f in range(12):
        faces = tracker.update(Faces(boxes=[dark_then_lit]), frame_index=f, timestamp=f / 10,
                               judgeable=[f < 8])
        if tracker.due(faces, f, 10)[0]:
            tracker.update_mask(1, np.array(WITHOUT), f)
    [ev] = events_from_tracks(tracker.end_all(), "camera:0", clock=lambda: NOW)
    assert ev.mask_state == "without_mask" and ev.mask_frames["without_mask"] == 9


def test_anchoring_keeps_offsets_within_a_batch():
    tracks = run_tracks()
    t3 = next(t for t in tracks if t.track_id == 3)  # ended at video time 100.6 + misses
    events = {e.track_id: e for e in events_from_tracks(tracks, "x", clock=lambda: NOW,
                                                         min_frames=1)}
    assert events[3].ended == pytest.approx(NOW - (102.9 - t3.last_time))
    assert events[3].ended < events[1].ended


def test_time_origin_dates_events_by_video_time():
    tracks = run_tracks(t0=0.0)  # a video file: timestamps from its first frame
    events = {e.track_id: e for e in events_from_tracks(tracks, "x", clock=lambda: NOW,
                                                         min_frames=1, time_origin=1000.0)}
    assert events[1].started == pytest.approx(1000.0) and events[1].ended == pytest.approx(1002.9)
    assert events[3].started == pytest.approx(1000.5)  # first seen at frame 5


def make_event(ended: float, identity: str | None = None) -> Event:
    return Event(new_event_id(), "camera:0", 1, ended - 2, ended, 20, "with_mask",
                 {"with_mask": 20, "without_mask": 0, "mask_incorrect": 0}, identity, 0.7)


@pytest.fixture
def gallery(tmp_path):
    g = SQLiteGallery(tmp_path / "g.sqlite3", busy_timeout_s=0.2)
    emb = np.ones(8, np.float32) / np.sqrt(8)
    g.add_person("Ann", templates=[Template("", emb, "e", "1")])
    yield g
    g.close()


def test_recorder_writes_in_the_background_and_purges_old_events(gallery):
    now = time.time()
    gallery.add_events([make_event(now - 40 * 86400), make_event(now - 10 * 86400)])
    rec = EventRecorder(gallery, "camera:0", flush_every_s=0.05, retention_days=30)
    try:
        rec.add_tracks(run_tracks())
        deadline = time.monotonic() + 10
        while gallery.query_events(source="camera:0")[1] < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        page, total = gallery.query_events(source="camera:0", newest_first=False)
        assert total == 3  # 2 tracks + the 10-day-old event; the 40-day-old one is purged
        assert page[0].ended == pytest.approx(now - 10 * 86400)
        assert {e.identity for e in page[1:]} == {"Ann", None}
        assert all(abs(e.ended - now) < 10 for e in page[1:])
        assert rec.pending == 0 and rec.written == 2
    finally:
        rec.close()


def test_recorder_flush_and_close(gallery):
    rec = EventRecorder(gallery, "browser:abc", flush_every_s=3600, retention_days=None)
    rec.add_tracks(run_tracks())
    assert rec.pending == 2
    assert rec.flush() == 2 and rec.pending == 0 and rec.flush() == 0
    rec.add_tracks(run_tracks())
    rec.close()
    rec.close()
    assert gallery.query_events(source="browser:abc")[1] == 4
    rec.add_tracks(run_tracks())  # after close: logged, not raised
    assert gallery.query_events()[1] == 4


def test_store_down_keeps_a_bounded_buffer_and_logs(gallery, caplog):
    caplog.set_level(logging.INFO, logger="maskwatch.events")
    other = sqlite3.connect(gallery.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the file: the store is unavailable
    rec = EventRecorder(gallery, "camera:0", flush_every_s=0.05, max_buffer=5, retention_days=None)
    try:
        events = [make_event(NOW + i) for i in range(8)]
        start = time.monotonic()
        rec.add_events(events[:4])
        rec.add_tracks(run_tracks())
        rec.add_events(events[4:])
        assert time.monotonic() - start < 0.1  # buffering never waits for the store
        time.sleep(0.5)  # several background attempts fail
        assert rec.flush() == 0  # does not raise
        assert rec.pending == 5 and rec.dropped == 5 and rec.written == 0
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert sum("cannot be written" in w for w in warnings) == 1
        assert sum("is full" in w for w in warnings) == 1
        assert "locked" in next(w for w in warnings if "cannot be written" in w)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert rec.flush() == 5
    rec.close()
    page, total = gallery.query_events(limit=10, newest_first=False)
    stored = {e.id for e in page}
    assert total == 5 and {e.id for e in events[4:]} <= stored  # the newest are kept
    assert not stored & {e.id for e in events[:4]}
    assert any("written again" in r.getMessage() for r in caplog.records)


def test_mongo_down_never_blocks_the_engine(caplog):
    pytest.importorskip("pymongo")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    g = open_gallery(f"mongodb://127.0.0.1:{port}/x")
    rec = EventRecorder(g, "camera:0", flush_every_s=0.01)
    try:
        start = time.monotonic()
        for _ in range(50):
            rec.add_tracks(run_tracks(frames=5))
        assert time.monotonic() - start < 2.0  # 50 calls while every write times out
        assert rec.pending == 100
    finally:
        rec.close()
        g.close()
    assert any("could not be recorded" in r.getMessage() for r in caplog.records)


def test_recorder_is_thread_safe(gallery):
    rec = EventRecorder(gallery, "camera:0", flush_every_s=0.01, batch_size=7, retention_days=None)
    tracks = run_tracks()

    def feed() -> None:
        for _ in range(20):
            rec.add_tracks(tracks)

    threads = [threading.Thread(target=feed) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rec.close()
    page, total = gallery.query_events(limit=1000)
    assert total == 160 == rec.written and len({e.id for e in page}) == 160


def test_recorder_never_raises_into_the_engine(gallery, caplog):
    rec = EventRecorder(gallery, "camera:0", flush_every_s=3600)
    rec.add_tracks([object()])  # not a track: logged
    rec.add_tracks([])
    rec.close()
    assert any(r.levelno == logging.ERROR for r in caplog.records)


def test_csv_export(tmp_path):
    a = Event(new_event_id(), "=cmd|' /C calc'!A0", 4, NOW - 2.5, NOW, 25, "without_mask",
              {"with_mask": 3, "without_mask": 20, "mask_incorrect": 2, "unknown": 4}, "Ann",
              0.61234)
    b = Event(new_event_id(), "camera:0", 5, NOW, NOW, 3, None)
    path = tmp_path / "events.csv"
    assert events_to_csv(iter([a, b]), path) == 2
    rows = list(csv.DictReader(path.open(newline="", encoding="utf-8")))
    assert tuple(rows[0]) == CSV_COLUMNS
    r = rows[0]
    assert r["id"] == a.id and r["track_id"] == "4" and r["frames"] == "25"
    assert r["source"].startswith("'=")  # not run as a spreadsheet formula
    assert r["ended_iso"] == datetime.fromtimestamp(NOW, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert r["duration_s"] == "2.500" and r["mask_state"] == "without_mask"
    assert ((r["with_mask_frames"], r["without_mask_frames"], r["mask_incorrect_frames"])
            == ("3", "20", "2"))
    assert r["unknown_frames"] == "4" and rows[1]["unknown_frames"] == "0"
    assert r["identity"] == "Ann" and r["best_similarity"] == "0.6123"
    assert (rows[1]["identity"] == "" and rows[1]["mask_state"] == ""
            and rows[1]["best_similarity"] == "")
    buf = io.StringIO()
    assert events_to_csv([], buf) == 0 and buf.getvalue().strip() == ",".join(CSV_COLUMNS)
    assert [p.name for p in tmp_path.iterdir()] == ["events.csv"]  # no temporary file left


@pytest.mark.parametrize(
    "text, expected",
    [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("1.5h", 5400), ("7d", 604800),
     ("2w", 1209600)],
)
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("24h", NOW - 86400),
        ("7d", NOW - 7 * 86400),
        ("now", NOW),
        ("1700000000", 1_700_000_000),
        ("2024-05-01T10:30:00Z", datetime(2024, 5, 1, 10, 30, tzinfo=UTC).timestamp()),
        ("2024-05-01T12:30+02:00", datetime(2024, 5, 1, 10, 30, tzinfo=UTC).timestamp()),
        ("2024-05-01", datetime(2024, 5, 1).astimezone().timestamp()),
    ],
)
def test_parse_time(text, expected):
    assert parse_time(text, now=NOW) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "yesterday", "2024-13-01", "-5h", "1h ago"])
def test_parse_time_refuses(text):
    with pytest.raises(ValueError, match="not a time"):
        parse_time(text, now=NOW)


# ---------------------------------------------------------------------- no event lost, none twice
# (issue 15, defect 4): what the store cannot take is kept, in memory and then on disk.


def _wait(cond, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _spool_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def locked(gallery):
    """Another connection holds the gallery's write lock: the store is unavailable."""
    other = sqlite3.connect(gallery.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    held = [True]

    def release() -> None:
        if held:
            held.clear()
            other.execute("ROLLBACK")
            other.close()

    yield release
    release()


def test_events_unwritten_at_close_wait_in_the_spool_for_the_next_writer(gallery, locked, tmp_path):
    spool = tmp_path / "home" / SPOOL_NAME
    events = [make_event(NOW + i) for i in range(7)]
    rec = EventRecorder(gallery, "camera:0", flush_every_s=0.05, retention_days=None, spool=spool)
    rec.add_events(events)
    rec.close()
    assert rec.spooled == 7 and rec.lost == 0 and rec.pending == 0 and rec.written == 0
    locked()
    assert stat.S_IMODE(spool.stat().st_mode) == 0o600
    lines = _spool_lines(spool)
    assert [x["event"]["id"] for x in lines] == [e.id for e in events]
    assert {x["store"] for x in lines} == {store_key(gallery)} and {x["v"] for x in lines} == {1}
    assert sorted(p.name for p in spool.parent.iterdir()) == [SPOOL_NAME]  # no temporary file
    assert gallery.query_events()[1] == 0

    writer = EventWriter(gallery, spool=spool, flush_every_s=0.05, retention_days=None)
    try:
        assert _wait(lambda: not spool.exists())
    finally:
        writer.close()
    page, total = gallery.query_events(limit=100, newest_first=False)
    assert total == 7 and [e.id for e in page] == [e.id for e in events] and writer.written == 7
    assert page[3].to_dict() == events[3].to_dict()  # all of it survives the file


def test_one_spool_serves_several_stores_and_is_bounded(gallery, tmp_path):
    spool_path = tmp_path / SPOOL_NAME
    other = SQLiteGallery(tmp_path / "other.sqlite3")
    spool = EventSpool(spool_path, max_events=5)
    mine = [make_event(NOW + i) for i in range(3)]
    theirs = [make_event(NOW + 10 + i) for i in range(3)]
    try:
        assert spool.add(store_key(gallery), mine) == 0
        assert spool.add(store_key(gallery), mine[:2]) == 0  # kept once
        assert spool.add(store_key(other), theirs) == 1  # 6 > 5: the oldest is dropped
        assert [e.id for e in spool.load(store_key(gallery))] == [e.id for e in mine[1:]]
        with open(spool_path, "a") as f:
            f.write("not json\n")
        writer = EventWriter(gallery, spool=spool_path, flush_every_s=0.05, retention_days=None)
        try:
            assert _wait(lambda: gallery.query_events()[1] == 2)
            assert _wait(lambda: not spool.load(store_key(gallery)))
        finally:
            writer.close()
        assert {e.id for e in gallery.query_events()[0]} == {e.id for e in mine[1:]}
        # not ours: kept
        assert [e.id for e in spool.load(store_key(other))] == [e.id for e in theirs]
        assert "not json" not in spool_path.read_text()
        writer = EventWriter(other, spool=spool_path, flush_every_s=0.05, retention_days=None)
        try:
            assert _wait(lambda: not spool_path.exists())
        finally:
            writer.close()
        assert {e.id for e in other.query_events()[0]} == {e.id for e in theirs}
    finally:
        other.close()


def test_closed_recorders_leave_their_events_with_the_shared_writer(gallery, locked):
    """A server's streams end while the store is down: their recorders close at once and
    the events are written by the service's writer when the store is back."""
    writer = EventWriter(gallery, flush_every_s=0.05, retention_days=None, max_backoff_s=0.2)
    try:
        start = time.monotonic()
        for i in range(3):
            rec = EventRecorder(gallery, f"browser:{i}", writer=writer)
            rec.add_tracks(run_tracks())
            rec.close()
        assert time.monotonic() - start < 0.1  # closing never waits for the store
        time.sleep(0.5)  # several tries fail
        assert writer.pending == 6 and gallery.query_events()[1] == 0
        locked()
        assert _wait(lambda: gallery.query_events()[1] == 6)
    finally:
        writer.close()
    assert gallery.event_sources() == ["browser:0", "browser:1", "browser:2"]
    assert writer.dropped == writer.lost == writer.spooled == 0


def test_a_store_down_at_start_does_not_delay_and_nothing_is_spooled_twice(tmp_path):
    pytest.importorskip("pymongo")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    g = open_gallery(f"mongodb://127.0.0.1:{port}/x")
    spool = tmp_path / SPOOL_NAME
    kept = [make_event(NOW + i) for i in range(5)]
    EventSpool(spool).add(store_key(g), kept)
    try:
        start = time.monotonic()
        writer = EventWriter(g, spool=spool, flush_every_s=0.05)
        assert time.monotonic() - start < 0.5  # the spool is read and written by the thread
        rec = EventRecorder(g, "camera:0", writer=writer)
        rec.add_tracks(run_tracks())
        rec.close()
        writer.close()
    finally:
        g.close()
    ids = [x["event"]["id"] for x in _spool_lines(spool)]
    assert len(ids) == len(set(ids)) == 7 and set(ids) >= {e.id for e in kept}
    assert writer.spooled == 7 and writer.lost == 0


def test_a_read_only_gallery_file_keeps_the_events(tmp_path, caplog):
    """The gallery file made immutable (``chattr +i``: tests run as root, for whom a
    0444 mode does not stop writes): the writer's connection cannot write, the events
    wait in the spool and are written once the file is writable again."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    path = tmp_path / "g.sqlite3"
    # Opened on a thread that then ends: every connection used below is opened after the
    # chattr (one opened before could still write to the WAL, which stays writable).
    opened: list[SQLiteGallery] = []
    t = threading.Thread(target=lambda: opened.append(SQLiteGallery(path, busy_timeout_s=0.2)))
    t.start()
    t.join()
    gallery = opened[0]
    spool = tmp_path / "home" / SPOOL_NAME
    events = [make_event(NOW + i) for i in range(4)]
    res = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        gallery.close()
        pytest.skip(f"chattr +i is not possible here: {res.stderr.strip()}")
    try:
        caplog.set_level(logging.WARNING, logger="maskwatch.events")
        writer = EventWriter(gallery, spool=spool, flush_every_s=0.05, retention_days=None)
        writer.add_events(events)
        assert writer.flush() == 0 and writer.pending == 4
        writer.close()
        assert writer.spooled == 4 and writer.lost == 0
        assert any("read-only" in r.getMessage() for r in caplog.records)
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    try:
        assert gallery.query_events()[1] == 0
        writer = EventWriter(gallery, spool=spool, flush_every_s=0.05, retention_days=None)
        try:
            assert _wait(lambda: not spool.exists())
        finally:
            writer.close()
        page, total = gallery.query_events()
        assert total == 4 and {e.id for e in page} == {e.id for e in events}
    finally:
        gallery.close()


@pytest.mark.slow
def test_analyze_keeps_the_events_of_a_store_lost_during_the_run(tmp_path, datasets):
    """``maskwatch analyze --db mongodb://...`` with MongoDB killed during the run: the
    events it cannot write are kept in the data folder (one line says where) and the
    next run with that store writes them, once."""
    from tests.mongo_server import MongoServer, secantusd_executable

    if secantusd_executable() is None:
        pytest.skip("secantusd-py not found: pip install secantusdb")
    pytest.importorskip("pymongo")
    clip = datasets / "videos" / "short_hamilton_clip.mp4"
    home = tmp_path / "home"
    spool = home / SPOOL_NAME
    env = dict(os.environ, MASKWATCH_HOME=str(home))
    mongo = MongoServer(tmp_path / "secantus")
    mongo.start()
    db = f"{mongo.url}/maskwatch"

    def analyze(out) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "maskwatch.cli", "analyze", str(clip),
                                 "--db", db, "--json", str(out), "--quiet"],
                                env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)

    def tracks(out) -> int:
        hits: dict[int, int] = {}
        for line in out.read_text().splitlines():
            for f in json.loads(line)["faces"]:
                hits[f["track_id"]] = hits.get(f["track_id"], 0) + 1
        return sum(1 for n in hits.values() if n >= 3)

    def stored() -> list[Event]:
        g = open_gallery(db)
        try:
            return list(g.iter_events(until=time.time() + 3600))
        finally:
            g.close()

    try:
        first = tmp_path / "first.jsonl"
        proc = analyze(first)
        try:
            assert _wait(lambda: first.exists() and first.stat().st_size > 0, timeout=120)
            mongo.stop(kill=True)
            _, err = proc.communicate(timeout=600)
        finally:
            proc.kill()
        assert proc.returncode == 0, err
        expected = tracks(first)
        assert f"are kept in {spool}" in err and "Traceback" not in err
        kept = [x["event"]["id"] for x in _spool_lines(spool)]
        mongo.start()
        before = stored()  # written before the kill
        assert len(before) + len(kept) == expected > 0
        assert not {e.id for e in before} & set(kept)

        second = tmp_path / "second.jsonl"
        proc = analyze(second)
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        events = stored()
        assert len(events) == len({e.id for e in events}) == expected + tracks(second)
        assert set(kept) <= {e.id for e in events} and not spool.exists()
    finally:
        mongo.stop(kill=True)
