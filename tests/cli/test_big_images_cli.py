"""Images over the decoders' pixel limits on the command line (issue 15): exit code 2 and
one sentence for one image; in a folder, that file is reported and the others analysed.

The PNGs are header-only bombs made here: 20000x20000 is over Pillow's limit (about 179 M
pixels); 40000x40000 is over OpenCV's too (2**30), which used to end in a traceback.
"""

import json
import subprocess
import sys

import pytest
from tests.big_images import bomb_png

SIZES = [(20000, 20000), (40000, 40000)]


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "maskwatch.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def _one_line(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_analyze_a_huge_image_exits_2_with_one_line(tmp_path, size):
    huge = tmp_path / "huge.png"
    huge.write_bytes(bomb_png(*size))
    line = _one_line(run_cli("analyze", str(huge), "--quiet"))
    assert "huge.png" in line and (f"{size[0] * size[1]:,} pixels is over the limit of "
                                   "40,000,000 pixels") in line


def test_analyze_folder_reports_the_huge_image_and_goes_on(datasets, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a_huge.png").write_bytes(bomb_png(40000, 40000))  # first in the folder's order
    (folder / "b_group.jpg").write_bytes((datasets / "group-photos" / "t1.jpg").read_bytes())
    res = run_cli("analyze", str(folder), "--json", "-", "--quiet")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    skipped = [x for x in res.stderr.splitlines() if "skipped" in x]
    assert len(skipped) == 1 and "a_huge.png" in skipped[0] and "over the limit" in skipped[0]
    records = [json.loads(x) for x in res.stdout.splitlines()]
    assert [r["name"] for r in records] == ["b_group.jpg"] and len(records[0]["faces"]) == 6
    assert "1 unreadable" in res.stderr


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_people_add_with_a_huge_photo_exits_2_and_enrols_nobody(tmp_path, size):
    huge = tmp_path / "huge.png"
    huge.write_bytes(bomb_png(*size))
    db = str(tmp_path / "gallery.sqlite3")
    line = _one_line(run_cli("people", "add", "Ann", str(huge), "--db", db))
    assert "huge.png" in line and "over the limit" in line
    assert "no people enrolled" in run_cli("people", "list", "--db", db).stdout


def test_people_import_skips_the_person_with_a_huge_photo(datasets, tmp_path):
    root = tmp_path / "people"
    (root / "ann").mkdir(parents=True)
    (root / "ann" / "huge.png").write_bytes(bomb_png(40000, 40000))
    (root / "obama").mkdir()
    (root / "obama" / "obama.jpg").write_bytes(
        (datasets / "identity-examples" / "examples" / "knn_examples" / "train" / "obama"
         / "obama.jpg").read_bytes())
    db = str(tmp_path / "gallery.sqlite3")
    res = run_cli("people", "import", str(root), "--db", db)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert "skipped ann" in res.stderr and "over the limit" in res.stderr
    assert "enrolled obama" in res.stdout
