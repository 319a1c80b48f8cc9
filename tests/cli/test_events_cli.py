"""`maskwatch events` and the events of `analyze --db`, end to end on a SQLite gallery in tmp."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from maskwatch.events import Event, new_event_id
from maskwatch.gallery import Template, open_gallery


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "maskwatch.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def db(tmp_path):
    """A gallery with Ann enrolled and 13 events: 12 in the last 2 hours, 1 from 40 days ago."""
    path = str(tmp_path / "gallery.sqlite3")
    now = time.time()
    g = open_gallery(path)
    g.add_person("Ann", templates=[Template("", np.ones(8, np.float32) / np.sqrt(8), "e", "1")])
    states = ["with_mask", "without_mask", None]
    g.add_events([Event(new_event_id(), "camera:0", i, now - 600 * i - 5, now - 600 * i, 10,
                        states[i % 3],
                        {"with_mask": 10 if i % 3 == 0 else 0,
                         "without_mask": 10 if i % 3 == 1 else 0},
                        "Ann" if i % 2 == 0 else None, 0.61) for i in range(12)]
                 + [Event(new_event_id(), "file:old.mp4", 1, now - 40 * 86400 - 3,
                          now - 40 * 86400, 5, None)])
    g.close()
    return path


def test_list(db):
    res = run_cli("events", "list", "--db", db, "--limit", "5")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 5 and "1-5 of 13 event(s)" in res.stderr
    assert lines[0].split("\t")[2:5] == ["camera:0", "Ann (0.61)", "with_mask"]
    res = run_cli("events", "list", "--db", db, "--unknown", "--mask", "without_mask", "--json")
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(rows) == 2 and all(r["identity"] is None and r["mask_state"] == "without_mask"
                                  for r in rows)
    res = run_cli("events", "list", "--db", db, "--identity", "Ann", "--since", "1h",
                  "--offset", "1")
    assert res.returncode == 0 and len(res.stdout.splitlines()) == 2 and "2-3 of 3" in res.stderr
    res = run_cli("events", "list", "--db", db, "--source", "file:old.mp4", "--until", "30d")
    assert len(res.stdout.splitlines()) == 1 and "unclassified" in res.stdout


def test_events_that_cannot_be_judged(db):
    g = open_gallery(db)
    now = time.time()
    g.add_events([Event(new_event_id(), "camera:1", 50 + i, now - 65, now - 60, 10, "unknown")
                  for i in range(3)])
    g.close()
    res = run_cli("events", "list", "--db", db, "--mask", "unknown")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 3 and all(line.split("\t")[4] == "cannot judge" for line in lines)
    res = run_cli("events", "stats", "--db", db, "--since", "1d", "--bucket", "1d")
    assert res.returncode == 0, res.stderr
    # left out of the compliance, counted apart
    assert res.stdout.startswith("15 event(s): 50% of classified wear a mask properly; ")
    assert ("by mask: with_mask 4, without_mask 4, mask_incorrect 0, cannot judge 3, "
            "unclassified 4") in res.stdout
    assert "\tcannot judge 3\tcompliance " in res.stdout  # in the bucket of now


def test_export_stats_purge(db, tmp_path):
    out = tmp_path / "events.csv"
    res = run_cli("events", "export", str(out), "--db", db, "--identity", "Ann")
    assert res.returncode == 0 and "exported 6 event(s)" in res.stdout
    rows = list(csv.DictReader(out.open(newline="")))
    assert len(rows) == 6 and {r["identity"] for r in rows} == {"Ann"}
    assert [r["ended_iso"] for r in rows] == sorted(r["ended_iso"] for r in rows)  # oldest first

    res = run_cli("events", "stats", "--db", db, "--since", "1d", "--bucket", "1d")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("12 event(s): 50% of classified wear a mask properly; "
                                 "6 unknown; 1 person seen")
    assert "people seen: Ann 6" in res.stdout
    assert "by mask: with_mask 4, without_mask 4, mask_incorrect 0, unclassified 4" in res.stdout
    buckets = [line for line in res.stdout.splitlines() if "compliance" in line]
    assert sum(int(b.split("\t")[1].split()[0]) for b in buckets) == 12 and 1 <= len(buckets) <= 2

    res = run_cli("events", "purge", "--db", db)
    assert res.returncode == 0 and "deleted 1 event(s) older than 30 days" in res.stdout
    res = run_cli("events", "purge", "--db", db, "--older-than-days", "0")
    assert "deleted 12 event(s)" in res.stdout
    assert "none of 0 event(s)" in run_cli("events", "list", "--db", db).stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["list", "--since", "yesterday"], "is not a time"),
        (["list", "--limit", "0"], "limit must be"),
        (["list", "--identity", "a/b"], "cannot contain"),
        (["stats", "--bucket", "soon"], "is not a duration"),
        (["stats", "--bucket", "0"], "bucket_s must be"),
        (["purge", "--older-than-days", "-1"], "must be 0 or more"),
        (["export", "{missing}/x.csv"], "No such file"),
        ([], "choose an action"),
    ],
)
def test_bad_input_is_one_line(db, tmp_path, args, message):
    args = [a.format(missing=tmp_path / "missing") for a in args]
    res = run_cli("events", *args, *(["--db", db] if args else []))
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert not list(tmp_path.glob("missing*"))


def test_mongodb_down_is_a_clear_error():
    res = run_cli("events", "list", "--db", "mongodb://127.0.0.1:9/maskwatch", timeout=30)
    assert res.returncode == 2
    assert "cannot be reached" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_analyze_records_events(datasets, tmp_path):
    db = str(tmp_path / "g.sqlite3")
    ex = datasets / "identity-examples" / "examples"
    assert run_cli("people", "add", "Lin-Manuel Miranda", str(ex / "lin-manuel-miranda.png"),
                   "--db", db).returncode == 0
    js = tmp_path / "out.jsonl"
    start = time.time()
    res = run_cli("analyze", str(datasets / "videos" / "short_hamilton_clip.mp4"), "--db", db,
                  "--json", str(js), "--quiet")
    assert res.returncode == 0, res.stderr
    g = open_gallery(db)
    try:
        events, total = g.query_events(limit=1000)
    finally:
        g.close()
    assert f"maskwatch: {total} event(s) recorded in {db}" in res.stderr
    # every track of at least 3 frames in the JSON lines is one event, with the same frame count
    frames_per_track: dict[int, int] = {}
    unjudged_per_track: dict[int, int] = {}  # frames shown as cannot judge
    first_seen: dict[int, float] = {}
    for line in js.read_text().splitlines():
        rec = json.loads(line)
        for f in rec["faces"]:
            frames_per_track[f["track_id"]] = frames_per_track.get(f["track_id"], 0) + 1
            unjudged_per_track[f["track_id"]] = (unjudged_per_track.get(f["track_id"], 0)
                                                 + (f["mask"] == "unknown"))
            first_seen.setdefault(f["track_id"], rec["timestamp"])
    assert sorted(e.frames for e in events) == sorted(n for n in frames_per_track.values()
                                                      if n >= 3)
    assert {e.source for e in events} == {"file:short_hamilton_clip.mp4"}
    # Dated from when the analysis started, in video seconds, however fast it ran.
    origin = min(e.started - first_seen[e.track_id] for e in events)
    assert start - 1 <= origin <= time.time()
    assert all(abs(e.started - origin - first_seen[e.track_id]) < 0.01 and e.started <= e.ended
               for e in events)
    named = [e for e in events if e.identity == "Lin-Manuel Miranda"]
    assert (named and max(e.frames for e in named) >= 50
            and all(e.best_similarity >= 0.42 for e in named))
    # mask_frames keeps the frames of each shown state, cannot judge ("unknown") included
    assert all(e.mask_state is not None and sum(e.mask_frames.values()) == e.frames
               and e.mask_frames["unknown"] == unjudged_per_track[e.track_id]
               for e in events)
    assert any(e.mask_state == "unknown" for e in events)  # the near-black faces
