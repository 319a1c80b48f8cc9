"""The command line: bad input gives one clear line and exit code 2, no traceback."""

import json
import subprocess
import sys

import cv2
import pytest

from maskwatch.cli import main


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "maskwatch.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_help_lists_commands():
    res = run_cli("--help")
    assert res.returncode == 0
    for cmd in ("analyze", "train", "evaluate"):
        assert cmd in res.stdout


@pytest.mark.parametrize("command", ["train", "evaluate"])
@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing", "no such folder"),
        (lambda p: p, "no class folders"),
        (lambda p: (p / "with_mask").mkdir() or p, "hold no images"),
        (lambda p: (p / "labels").mkdir() or p, "no VOC labels"),
    ],
)
def test_bad_data_folders(tmp_path, command, make, message):
    target = make(tmp_path)
    extra = ["--out", str(tmp_path / "out")]
    res = run_cli(command, str(target), *extra)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_bad_source_kind(tmp_path, capsys):
    assert main(["train", "folderx:/nowhere", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no such folder" in err or "unknown source kind" in err


def test_train_refuses_non_empty_out(tmp_path, capsys, datasets):
    (tmp_path / "keep.txt").write_text("x")
    assert main(["train", str(datasets / "mask-classification"), "--out", str(tmp_path)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "x"


@pytest.mark.parametrize(
    "content, message",
    [(b"", "empty file"), (b"GIF89a garbage", "not a readable image")],
)
def test_analyze_bad_image(tmp_path, content, message):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(content)
    res = run_cli("analyze", str(bad), "--out", str(tmp_path / "o.jpg"))
    assert res.returncode == 2
    assert message in res.stderr and "Traceback" not in res.stderr


def test_analyze_missing_input(tmp_path):
    res = run_cli("analyze", str(tmp_path / "nothing.jpg"))
    assert res.returncode == 2 and "no such file" in res.stderr


def test_analyze_image_writes_annotation_and_json(datasets, tmp_path):
    out, js = tmp_path / "t1_annotated.jpg", tmp_path / "t1.jsonl"
    res = run_cli("analyze", str(datasets / "group-photos" / "t1.jpg"), "--out", str(out),
                  "--json", str(js))
    assert res.returncode == 0, res.stderr
    img = cv2.imread(str(out))
    assert img is not None and img.shape[0] > 100
    rec = json.loads(js.read_text().splitlines()[0])
    assert len(rec["faces"]) == 6
    assert all(f["mask"] == "without_mask" for f in rec["faces"]), rec["faces"]
    assert {"detect", "classify"} <= set(rec["timings_ms"])


def test_analyze_counts_faces_that_cannot_be_judged_apart(datasets, tmp_path, capsys):
    image = cv2.imread(str(datasets / "group-photos" / "t1.jpg"))
    dark = tmp_path / "dark.png"
    # dark enough that the faces found are under the default luma of 8
    cv2.imwrite(str(dark), (image.astype("float32") * 0.04).round().astype("uint8"))
    js = tmp_path / "dark.jsonl"
    assert main(["analyze", str(dark), "--json", str(js), "-q"]) == 0
    out = capsys.readouterr().err  # the summary
    rec = json.loads(js.read_text())
    n = len(rec["faces"])
    assert n >= 1 and all(f["mask"] == "unknown" for f in rec["faces"]), rec["faces"]
    assert f"0 with mask, 0 without, 0 below the nose, {n} cannot be judged;" in out
    # the rule off: the classifier's answer, counted as before
    assert main(["analyze", str(dark), "--json", str(js), "-q", "--min-luma", "0"]) == 0
    assert "cannot be judged" not in capsys.readouterr().err
    assert all(f["mask"] != "unknown" for f in json.loads(js.read_text())["faces"])
    res = run_cli("analyze", str(dark), "--min-luma", "-1")
    assert res.returncode == 2 and "--min-luma must be 0 (off) or more" in res.stderr


def test_analyze_folder_goes_on_past_a_bad_file(datasets, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((datasets / "group-photos" / "t1.jpg").read_bytes())
    (folder / "b.jpg").write_bytes(b"broken")
    res = run_cli("analyze", str(folder), "--out", str(tmp_path / "out"), "--json", "-")
    assert res.returncode == 0, res.stderr
    assert "skipped" in res.stderr and "b.jpg" in res.stderr
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert len(lines) == 1 and len(lines[0]["faces"]) == 6
    assert (tmp_path / "out" / "a_annotated.jpg").is_file()


def test_analyze_video_writes_video_and_json(datasets, tmp_path):
    out, js = tmp_path / "clip.mp4", tmp_path / "clip.jsonl"
    res = run_cli("analyze", str(datasets / "videos" / "short_hamilton_clip.mp4"),
                  "--out", str(out), "--json", str(js), "--quiet")
    assert res.returncode == 0, res.stderr
    lines = [json.loads(x) for x in js.read_text().splitlines()]
    assert len(lines) == 275
    assert [rec["frame"] for rec in lines] == list(range(275))
    assert all(f["track_id"] >= 1 for rec in lines for f in rec["faces"])
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 275
    cap.release()
    assert "frames/s" in res.stderr and "track(s)" in res.stderr


@pytest.mark.parametrize("spec, message", [("97", "camera 97"),
                                           ("http://127.0.0.1:9/stream", "cannot open stream"),
                                           ("ftp://x/y", "")])
def test_analyze_unusable_live_sources(spec, message):
    res = run_cli("analyze", spec, "--max-retries", "0", timeout=60)
    assert res.returncode == 2
    assert message in res.stderr and "Traceback" not in res.stderr


def test_evaluate_recognition_needs_person_folders(tmp_path):
    res = run_cli("evaluate", "--task", "recognition", str(tmp_path), "--out", str(tmp_path / "o"))
    assert res.returncode == 2
    assert "one sub-folder of photos per person" in res.stderr and "Traceback" not in res.stderr


def test_evaluate_detection_needs_voc(datasets, tmp_path):
    res = run_cli("evaluate", "--task", "detection", f"folder:{datasets / 'mask-classification'}",
                  "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "voc" in res.stderr


def _variants(datasets, folder):
    """The same group photo as grayscale, RGBA and 16-bit PNGs."""
    import numpy as np

    img = cv2.imread(str(datasets / "group-photos" / "t1.jpg"))
    cv2.imwrite(str(folder / "gray.png"), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(folder / "rgba.png"), cv2.cvtColor(img, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(folder / "deep.png"), img.astype(np.uint16) * 257)
    return img


@pytest.mark.parametrize("name", ["gray.png", "rgba.png", "deep.png"])
def test_analyze_grayscale_rgba_and_16_bit_images(datasets, tmp_path, name):
    _variants(datasets, tmp_path)
    res = run_cli("analyze", str(tmp_path / name), "--json", "-", "--quiet")
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout.splitlines()[0])
    assert len(rec["faces"]) == 6 and all(f["mask"] == "without_mask" for f in rec["faces"])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda img, p: cv2.imwrite(str(p), img[:1, :1]), "1x1 pixels is too small to hold a face"),
        (lambda img, p: p.write_bytes(cv2.imencode(".jpg", img[:200, :200])[1].tobytes()[:3000]),
         "not a readable image"),
        (lambda img, p: p.write_text("no picture here"), "not a readable image"),
        (lambda img, p: cv2.imwrite(str(p), img), "is over the limit of 100,000 pixels"),
    ],
    ids=["1x1", "truncated", "not-an-image", "over-pixel-limit"],
)
def test_analyze_refuses_bad_images_with_one_line(datasets, tmp_path, make, message):
    img = cv2.imread(str(datasets / "group-photos" / "t1.jpg"))
    bad = tmp_path / "bad.png"
    make(img, bad)
    res = run_cli("analyze", str(bad), "--max-pixels", "100000", "--quiet")
    assert res.returncode == 2
    assert message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_analyze_folder_of_mixed_images_reports_the_bad_ones(datasets, tmp_path):
    img = _variants(datasets, tmp_path)
    cv2.imwrite(str(tmp_path / "one.png"), img[:1, :1])
    (tmp_path / "empty.jpg").write_bytes(b"")
    res = run_cli("analyze", str(tmp_path), "--json", "-", "--quiet")
    assert res.returncode == 0, res.stderr
    recs = [json.loads(x) for x in res.stdout.splitlines()]
    assert sorted(len(r["faces"]) for r in recs) == [6, 6, 6]
    assert "one.png" in res.stderr and "too small" in res.stderr
    assert "empty.jpg" in res.stderr and "empty file" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("display", ["", ":99"])
def test_analyze_show_without_a_window_system_says_what_to_do(datasets, display):
    """This OpenCV is the headless build: --show fails at once, before any work, with a way out."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    if display:
        env["DISPLAY"] = display
    res = subprocess.run([sys.executable, "-m", "maskwatch.cli", "analyze",
                          str(datasets / "group-photos" / "t1.jpg"), "--show"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 2
    assert "--show needs" in res.stderr and "maskwatch serve --source" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("group", ["people", "events"])
def test_command_group_without_action(group):
    res = run_cli(group)
    assert res.returncode == 2
    assert ("choose an action" in res.stderr and "list" in res.stderr
            and "Traceback" not in res.stderr)
    assert len(res.stderr.strip().splitlines()) == 1
