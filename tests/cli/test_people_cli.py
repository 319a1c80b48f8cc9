"""`maskwatch people` and `analyze --db` end to end, on a SQLite gallery in tmp."""

import json
import subprocess
import sys

import pytest


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "maskwatch.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def db(tmp_path):
    return str(tmp_path / "gallery.sqlite3")


def test_people_lifecycle(datasets, db):
    train = datasets / "identity-examples" / "examples" / "knn_examples" / "train"
    res = run_cli("people", "import", str(train), "--largest", "--db", db)
    assert res.returncode == 0, res.stderr
    assert "enrolled obama" in res.stdout
    listed = run_cli("people", "list", "--db", db).stdout
    assert "obama\t10 templates (8 with synthetic masks)" in listed
    assert run_cli("people", "rename", "obama", "Barack Obama", "--db", db).returncode == 0
    res = run_cli("people", "remove", "Barack Obama", "--db", db)
    assert res.returncode == 0 and "10 templates" in res.stdout
    assert "obama" not in run_cli("people", "list", "--db", db).stdout.lower()


@pytest.mark.parametrize(
    "args, message",
    [
        (["add", "x/y", "{photo}"], "cannot contain"),
        (["add", "   ", "{photo}"], "name"),
        (["add", "crowd", "{group}"], "use --largest"),
        (["add", "nobody", "{missing}"], "missing.jpg"),
        (["remove", "ghost"], "no person named 'ghost'"),
        (["rename", "ghost", "spirit"], "no person named 'ghost'"),
    ],
)
def test_people_bad_input(datasets, db, tmp_path, args, message):
    photo = datasets / "identity-examples" / "examples" / "obama.jpg"
    group = datasets / "group-photos" / "t1.jpg"
    args = [a.format(photo=photo, group=group, missing=tmp_path / "missing.jpg") for a in args]
    res = run_cli("people", *args, "--db", db)
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr
    assert "Traceback" not in res.stderr
    assert "no people enrolled" in run_cli("people", "list", "--db", db).stdout


def test_duplicate_name_refused(datasets, db):
    photo = str(datasets / "identity-examples" / "examples" / "obama.jpg")
    assert run_cli("people", "add", "obama", photo, "--db", db).returncode == 0
    res = run_cli("people", "add", "obama", photo, "--db", db)
    assert res.returncode == 2 and "already enrolled" in res.stderr


def test_mongodb_down_is_a_clear_error():
    res = run_cli("people", "list", "--db", "mongodb://127.0.0.1:9/maskwatch", timeout=30)
    assert res.returncode == 2
    assert "cannot be reached" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_people_in_the_video_are_named(datasets, db, tmp_path):
    ex = datasets / "identity-examples" / "examples"
    assert run_cli("people", "add", "Lin-Manuel Miranda", str(ex / "lin-manuel-miranda.png"),
                   "--db", db).returncode == 0
    js = tmp_path / "out.jsonl"
    res = run_cli("analyze", str(datasets / "videos" / "short_hamilton_clip.mp4"), "--db", db,
                  "--json", str(js), "--quiet")
    assert res.returncode == 0, res.stderr
    names = [f.get("identity") for line in js.read_text().splitlines()
             for f in json.loads(line)["faces"]]
    assert names.count("Lin-Manuel Miranda") >= 50
    assert set(names) <= {"Lin-Manuel Miranda", None}
