"""Side-by-side recognition reports, on the committed SFace run."""

import copy
import json
from pathlib import Path

import pytest

from maskwatch.evaluate.compare_recognition import main, summary, write_comparison

RUN = Path(__file__).resolve().parents[2] / "docs" / "results" / "recognition.json"


@pytest.fixture(scope="module")
def run():
    return json.loads(RUN.read_text())


def test_summary_takes_the_headline_figures(run):
    s = summary(run)
    assert s["embedder"] == "sface-2021dec-int8 v1" and s["detector"] == "yunet"
    plain, aware = s["schemes"]["plain"], s["schemes"]["mask_aware"]
    assert plain["masked_rank1"] == run["closed_set"]["masked"]["plain"]["rank1"]
    assert (aware["masked_tar_far1e-3"]
            == run["closed_set"]["masked"]["mask_aware"]["tar"]["1e-3"]["tar"])
    assert aware["threshold"] == run["recommended_thresholds"]["mask_aware"]["threshold"]
    assert s["failed_to_detect"]["masked"] == run["probes"]["masked"]["failed_to_detect"]


def test_side_by_side_report(run, tmp_path):
    other = copy.deepcopy(run)
    other["embedder"] = {"name": "dlib-resnet-v1", "version": "1"}
    other["closed_set"]["masked"]["plain"]["rank1"] = 0.5
    md = write_comparison([("A", other), ("B", run)], tmp_path / "cmp").read_text()
    theirs = 100 * summary(run)["schemes"]["plain"]["masked_rank1"]
    assert f"| masked rank-1 | 50.00% | {theirs:.2f}% |" in md
    assert "# Full report: A" in md and "# Full report: B" not in md
    data = json.loads((tmp_path / "cmp.json").read_text())
    assert [c["label"] for c in data["columns"]] == ["A", "B"]


def test_different_protocols_are_refused(run, tmp_path):
    other = copy.deepcopy(run)
    other["k"] = 3
    with pytest.raises(ValueError, match="differ in k"):
        write_comparison([("A", other), ("B", run)], tmp_path / "cmp")
    assert main(["A=" + str(tmp_path / "missing.json"), "--out", str(tmp_path / "x")]) == 2
