"""The README's Python example runs as written, and the Engine behaves as it says.

The example is taken from README.md's "Python API" section, its paths pointed at the
shared datasets, and run in a folder whose gallery has Lin-Manuel Miranda enrolled
(with the CLI, as the example's comment says).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from tests.conftest import REPO


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README.md: no python block under ## Python API"
    return match.group(1)


def test_the_readme_example_runs(datasets, tmp_path, monkeypatch):
    code = readme_example()
    assert len(code.strip().splitlines()) <= 6, "the example should stay about five lines"
    photo = datasets / "identity-examples" / "examples" / "lin-manuel-miranda.png"
    enrol = subprocess.run([sys.executable, "-m", "maskwatch.cli", "people", "add", "Lin",
                            str(photo),
                            "--db", str(tmp_path / "people.sqlite3")],
                           capture_output=True, text=True, cwd=tmp_path, timeout=300,
                           env=dict(os.environ, MASKWATCH_HOME=str(tmp_path / "home")))
    assert enrol.returncode == 0, enrol.stderr
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MASKWATCH_HOME", str(tmp_path / "home"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code.replace("../shared/datasets", str(datasets)), "README.md", "exec"), {})
    lines = out.getvalue().splitlines()
    photo_faces = eval(lines[0])  # the faces of the group photo, as printed  # noqa: S307
    assert len(photo_faces) >= 5 and all("mask" in f and "box" in f for f in photo_faces)
    frames = lines[1:]
    assert len(frames) > 100 and frames[0].startswith("0 ")
    assert any("'Lin'" in line for line in frames), "the enrolled person was never named"
    assert any("without_mask" in line for line in frames)


def test_engine_settings_are_checked():
    from maskwatch import Engine, EngineSettings

    with pytest.raises(ValueError, match="mode"):
        EngineSettings(mode="fast")
    with pytest.raises(ValueError, match="detector"):
        Engine(detector="haar")


def test_a_photo_and_a_video_frame_through_the_engine(datasets):
    import cv2

    from maskwatch import Engine, Faces, FrameResult

    with Engine() as engine:
        photo = engine.analyze(datasets / "group-photos" / "t1.jpg")
        assert isinstance(photo, FrameResult) and isinstance(photo.faces, Faces)
        assert len(photo.faces) >= 5
        # photo mode: every face classified, nobody looked up (no gallery)
        assert all(lab is not None for lab in photo.faces.mask_labels)
        assert photo.faces.names.tolist() == [None] * len(photo.faces)
        assert np.isnan(photo.faces.similarities).all()
        # the shown label is the one in the JSON, one mask truth
        assert [f["mask"] for f in photo.to_dict()["faces"]] == photo.faces.mask_labels.tolist()
        frame = cv2.imread(str(datasets / "group-photos" / "t1.jpg"))
        assert len(engine.analyze(frame).faces) == len(photo.faces)

        results = list(engine.run(datasets / "videos" / "short_hamilton_clip.mp4"))
        assert len(results) > 100
        assert (results[0].source.endswith("short_hamilton_clip.mp4")
                and results[0].image is not None)
        tracked = [int(t) for r in results for t in r.faces.track_ids]
        assert tracked and min(tracked) >= 0  # video is tracked in auto mode


def test_an_unreadable_photo_is_one_clear_error(tmp_path):
    from maskwatch import Engine
    from maskwatch.ops.image import ImageError

    bad = tmp_path / "photo.jpg"
    bad.write_bytes(b"not an image")
    with Engine() as engine, pytest.raises(ImageError, match="photo.jpg"):
        engine.analyze(bad)


def test_importing_maskwatch_loads_no_model_code():
    code = ("import sys, maskwatch; assert maskwatch.__version__; "
            "heavy = [m for m in ('cv2', 'onnxruntime', 'openvino', 'maskwatch.engine') "
            "if m in sys.modules]; "
            "assert not heavy, heavy; maskwatch.Engine; assert 'maskwatch.engine' in sys.modules")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_photos_of_a_folder_share_no_tracks_in_any_mode(datasets, tmp_path):
    import shutil

    from maskwatch import Engine

    photo = datasets / "group-photos" / "t1.jpg"
    for k in range(3):  # the same photo three times: a tracker would follow its faces
        shutil.copy(photo, tmp_path / f"p{k}.jpg")
    for mode in ("auto", "photo", "live"):
        with Engine(mode=mode) as engine:
            results = list(engine.run(tmp_path))
        assert [r.name for r in results] == ["p0.jpg", "p1.jpg", "p2.jpg"], mode
        assert all((r.faces.track_ids == -1).all() and len(r.faces) for r in results), mode
