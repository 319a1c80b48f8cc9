"""`--embedder dlib` and `--detector hog` end to end: enrolment, analyze --db, evaluate.

Tests that run dlib skip when the [dlib] extra / face_recognition is missing; the
message for a missing backend is tested with the module hidden, so it runs everywhere.
"""

import importlib.util
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

HAVE_DLIB = (importlib.util.find_spec("face_recognition") is not None
             and importlib.util.find_spec("dlib") is not None)
needs_dlib = pytest.mark.skipif(not HAVE_DLIB, reason="the [dlib] extra and face_recognition "
                                                      "(--no-deps) are not installed")

DLIB, SFACE = ("dlib-resnet-v1", "1"), ("sface-2021dec-int8", "1")


def run_cli(*args: str, timeout: int = 300, hide_dlib: bool = False) -> subprocess.CompletedProcess:
    hide = "import sys; sys.modules['face_recognition'] = None; " if hide_dlib else ""
    code = f"{hide}import sys; from maskwatch.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def db(tmp_path):
    return str(tmp_path / "gallery.sqlite3")


@pytest.mark.parametrize("args", [
    ["people", "add", "ann", "ann.jpg", "--embedder", "dlib"],
    ["analyze", "{tmp}/photo.jpg", "--db", "{db}", "--embedder", "dlib"],
    ["evaluate", "--task", "recognition", "{tmp}", "--out", "{tmp}/out", "--detector", "hog"],
    ["serve", "--embedder", "dlib", "--port", "0"],
])
def test_missing_backend_is_one_clear_line(tmp_path, db, args):
    (tmp_path / "person").mkdir()
    cv2.imwrite(str(tmp_path / "photo.jpg"), np.full((64, 64, 3), 128, np.uint8))
    args = [a.format(db=db, tmp=tmp_path) for a in args]
    if args[0] == "people":
        args += ["--db", db]
    res = run_cli(*args, hide_dlib=True, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert ("pip install 'maskwatch[dlib]'" in res.stderr
            and "--no-deps face_recognition" in res.stderr)
    assert "Traceback" not in res.stderr


def test_detection_task_refuses_hog(tmp_path):
    res = run_cli("evaluate", "--task", "detection", str(tmp_path), "--out", str(tmp_path / "o"),
                  "--detector", "hog")
    assert res.returncode == 2 and "yunet or ssd" in res.stderr and "Traceback" not in res.stderr


def identities(stdout: str) -> list:
    return [f.get("identity") for line in stdout.splitlines() if line.startswith("{")
            for f in json.loads(line)["faces"]]


@needs_dlib
def test_embedders_are_never_mixed_and_the_hint_re_enrols(datasets, db):
    from maskwatch.gallery import open_gallery

    ex = datasets / "identity-examples" / "examples"
    train = ex / "knn_examples" / "train"
    res = run_cli("people", "add", "obama", str(train / "obama" / "obama.jpg"),
                  "--embedder", "dlib", "--db", db)
    assert res.returncode == 0, res.stderr
    assert run_cli("people", "add", "biden", str(train / "biden" / "biden.jpg"),
                   "--db", db).returncode == 0
    with open_gallery(db) as g:
        names, emb, masked = g.templates(*DLIB)
        assert sorted(set(names)) == ["obama"] and len(names) == 5 and emb.shape == (5, 128)
        names, _, _ = g.templates(*SFACE)
        assert sorted(set(names)) == ["biden"] and len(names) == 5

    both = str(ex / "knn_examples" / "test" / "obama_and_biden.jpg")
    # dlib: only Obama can be named; Biden's SFace templates are never searched
    res = run_cli("analyze", both, "--db", db, "--embedder", "dlib", "--json", "-")
    assert res.returncode == 0, res.stderr
    assert "obama" in identities(res.stdout) and "biden" not in identities(res.stdout)
    assert "1 person was enrolled with another embedder (sface-2021dec-int8 v1)" in res.stderr
    assert "--add --embedder dlib" in res.stderr
    # SFace: the other way round, and the message says how to re-enrol Obama
    res = run_cli("analyze", both, "--db", db, "--json", "-")
    assert res.returncode == 0, res.stderr
    assert "biden" in identities(res.stdout) and "obama" not in identities(res.stdout)
    hint = "maskwatch people add NAME PHOTO... --add --embedder sface"
    assert "(dlib-resnet-v1 v1)" in res.stderr and hint in res.stderr
    # following the hint makes Obama recognisable by SFace too, without touching his dlib templates
    res = run_cli("people", "add", "obama", str(train / "obama" / "obama2.jpg"), "--add",
                  "--embedder", "sface", "--db", db)
    assert res.returncode == 0, res.stderr
    res = run_cli("analyze", both, "--db", db, "--json", "-")
    assert sorted(n for n in identities(res.stdout) if n) == ["biden", "obama"]
    assert "another embedder" not in res.stderr
    with open_gallery(db) as g:
        assert len(g.templates(*DLIB)[0]) == 5 and len(g.templates(*SFACE)[0]) == 10


@needs_dlib
def test_evaluate_recognition_with_dlib_and_hog(datasets, tmp_path):
    out = tmp_path / "rec"
    res = run_cli("evaluate", "--task", "recognition", str(datasets / "lfw-identities"),
                  "--out", str(out), "--embedder", "dlib", "--detector", "hog",
                  "--max-per-source", "3", "--quiet")
    assert res.returncode == 0, res.stderr
    r = json.loads((out / "recognition.json").read_text())
    assert r["embedder"]["name"] == "dlib-resnet-v1" and r["detector"] == "hog"
    assert r["people"] == 3 and r["enrolment"]["templates"] > 0
    p = r["probes"]["masked"]
    assert p["detected"] + p["failed_to_detect"] == p["photos"] > 0
    assert r["closed_set"]["unmasked"]["plain"]["rank1"] > 0.5
    assert r["timing_ms"]["embed_per_face_median"] > 0
    assert "Embedder `dlib-resnet-v1 v1`, detector `hog`" in (out / "recognition.md").read_text()


@needs_dlib
def test_the_web_app_recognises_with_the_dlib_embedder(datasets, tmp_path):
    """`serve --embedder dlib`: enrolment and recognition in the web app use dlib
    templates, with dlib's thresholds; SFace templates in the same gallery are not used."""
    pytest.importorskip("fastapi")
    from tests.web.conftest import TestClient  # imported there without starlette's httpx2 note

    from maskwatch.gallery import open_gallery
    from maskwatch.web import WebSettings, create_app

    ex = datasets / "identity-examples" / "examples"
    train = ex / "knn_examples" / "train"
    db = str(tmp_path / "gallery.sqlite3")
    # biden is enrolled with sface, the default embedder
    assert run_cli("people", "add", "biden", str(train / "biden" / "biden.jpg"),
                   "--db", db).returncode == 0
    settings = WebSettings(home=tmp_path / "home", db=db, admin_password="pw-for-dlib-test",
                           embedder="dlib",
                           allowed_hosts=["testserver"])  # the TestClient's Host header
    assert settings.resolved_thresholds() == (0.948, 0.973)
    bearer = {"Authorization": "Bearer pw-for-dlib-test"}
    with TestClient(create_app(settings)) as c:
        assert c.get("/api/health").json()["embedder"] == "dlib"
        photo = (train / "obama" / "obama.jpg").read_bytes()
        r = c.post("/api/people", data={"name": "obama"},
                   files=[("photos", ("obama.jpg", photo, "image/jpeg"))], headers=bearer)
        assert r.status_code in (200, 201), r.text
        both = (ex / "knn_examples" / "test" / "obama_and_biden.jpg").read_bytes()
        faces = c.post("/api/analyze",
                       files={"file": ("both.jpg", both, "image/jpeg")}).json()["faces"]
        names = {f.get("identity") for f in faces}
        assert "obama" in names and "biden" not in names
    with open_gallery(db) as g:
        assert sorted(set(g.templates(*DLIB)[0])) == ["obama"]
