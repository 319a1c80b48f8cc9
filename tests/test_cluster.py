"""``maskwatch analyze FOLDER --cluster``: the photos analysed by Dask workers.

A real LocalCluster of two worker processes on 127.0.0.1 (``--cluster local:2``) and a
real SQLite gallery; the JSON lines must be the ones written without a cluster, in the
same order (timings aside).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("distributed", reason="needs the [cluster] extra (Dask)")


def run_cli(*args: str, cwd: str | None = None,
            timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "maskwatch.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd,
                          env=dict(os.environ, MASKWATCH_HOME=str(cwd or "."),
                                   PYTHONUNBUFFERED="1"))


def records(path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        rec.pop("timings_ms")
        out.append(rec)
    return out


@pytest.fixture
def photo_folder(datasets, tmp_path):
    """Twenty-two photos in two sub-folders, one unreadable file among them."""
    root = tmp_path / "photos"
    lfw = sorted((datasets / "lfw-identities" / "images").rglob("*.jpg"))[:18]
    for k, f in enumerate(lfw):
        dest = root / ("a" if k % 2 else "b") / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest)
    shutil.copy(datasets / "group-photos" / "t1.jpg", root / "group.jpg")
    lin = datasets / "identity-examples" / "examples" / "lin-manuel-miranda.png"
    shutil.copy(lin, root / "lin.png")
    for name in ("mask_blue.jpg", "mask_white.jpg"):
        shutil.copy(datasets / "group-photos" / name, root / "a" / name)
    (root / "a" / "broken.jpg").write_bytes(b"not a photo")
    return root


def test_a_folder_on_two_workers_gives_the_same_lines_in_the_same_order(photo_folder, datasets,
                                                                        tmp_path):
    db = str(tmp_path / "people.sqlite3")
    enrol = run_cli("people", "add", "Lin",
                    str(datasets / "identity-examples" / "examples" / "lin-manuel-miranda.png"),
                    "--db", db, cwd=str(tmp_path))
    assert enrol.returncode == 0, enrol.stderr
    here = run_cli("analyze", str(photo_folder), "--db", db, "--json", "here.jsonl", "-q",
                   cwd=str(tmp_path))
    assert here.returncode == 0, here.stderr
    there = run_cli("analyze", str(photo_folder), "--db", db, "--json", "there.jsonl", "-q",
                    "--cluster", "local:2", cwd=str(tmp_path))
    assert there.returncode == 0, there.stderr
    mine, theirs = records(tmp_path / "here.jsonl"), records(tmp_path / "there.jsonl")
    assert len(mine) == 22 and theirs == mine
    assert [r["frame"] for r in theirs] == sorted(r["frame"] for r in theirs)
    assert any(f.get("identity") == "Lin" for r in theirs for f in r["faces"])
    # the unreadable photo is reported, once, as without a cluster
    skipped = "skipped a/broken.jpg"
    assert there.stderr.count(skipped) == 1 == here.stderr.count(skipped)
    assert "1 unreadable" in there.stderr.splitlines()[-1]


@pytest.mark.parametrize(("args", "message"), [
    (("--cluster", "somewhere"), "give the scheduler as tcp://HOST:PORT, or local[:N]"),
    (("--cluster", "local:0"), "at least one worker"),
    (("--cluster", "tcp://127.0.0.1:9"), "cannot reach the Dask scheduler at tcp://127.0.0.1:9"),
    (("--cluster", "local", "--out", "annotated"), "--out and --show need the photos here"),
])
def test_cluster_mistakes_are_one_clear_line(photo_folder, tmp_path, args, message):
    res = run_cli("analyze", str(photo_folder), "-q", *args, cwd=str(tmp_path), timeout=120)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr


def test_a_video_is_not_sent_to_a_cluster(datasets, tmp_path):
    res = run_cli("analyze", str(datasets / "videos" / "short_hamilton_clip.mp4"), "-q",
                  "--cluster", "local", cwd=str(tmp_path))
    assert res.returncode == 2 and "analyses a folder of photos" in res.stderr, res.stderr
