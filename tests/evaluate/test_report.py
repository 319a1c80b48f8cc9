"""Tests for maskwatch.evaluate.report.write_report."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from maskwatch.evaluate.report import write_report

NAMES = ("with_mask", "without_mask", "mask_incorrect")
Y_TRUE = [0, 0, 0, 1, 1, 2, 2, 2, 2, 1]
Y_PRED = [0, 0, 2, 1, 0, 2, 2, 0, 1, 1]
SIZES = [10, 12, 16, 20, 31, 40, 64, 100, 200, 15]
HISTORY = {
    "train_loss": [1.1, 0.8, 0.6, 0.5, 0.45],
    "val_loss": [1.0, 0.85, 0.7, 0.72, 0.75],
    "train_acc": [0.4, 0.6, 0.75, 0.8, 0.85],
    "val_acc": [0.45, 0.6, 0.7, 0.68, 0.69],
    "best_epoch": 2,
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SRC = Path(__file__).resolve().parents[2] / "src"


def _probs(y_pred: list[int], conf: float = 0.8) -> np.ndarray:
    p = np.full((len(y_pred), 3), (1 - conf) / 2)
    p[np.arange(len(y_pred)), y_pred] = conf
    return p


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    assert data[-8:-4] == b"IEND"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("full") / "nested" / "report"  # created by write_report
    extra = {
        "model": "mobilenet_v3_small",
        "epochs": np.int64(5),
        "lr": np.float32(0.001),
        "bad": float("nan"),
    }
    metrics = write_report(
        out,
        Y_TRUE,
        Y_PRED,
        _probs(Y_PRED),
        NAMES,
        sizes=SIZES,
        history=HISTORY,
        extra=extra,
        title="Test run",
    )
    return out, metrics


@pytest.mark.parametrize(
    "name",
    [
        "metrics.json",
        "classification_report.txt",
        "confusion_matrix.png",
        "curves.png",
        "report.md",
    ],
)
def test_full_report_writes_file(full_report, name):
    out, _ = full_report
    assert (out / name).is_file()
    assert (out / name).stat().st_size > 0


@pytest.mark.parametrize("name", ["confusion_matrix.png", "curves.png"])
def test_full_report_pngs_are_real(full_report, name):
    out, _ = full_report
    width, height = _png_size(out / name)
    assert width >= 600 and height >= 300


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (("n",), 10),
        (("accuracy",), 0.6),
        (("confusion_matrix",), [[2, 0, 1], [1, 2, 0], [1, 1, 2]]),
        (("two_class", "confusion"), [[6, 1], [1, 2]]),
        (("two_class", "accuracy"), 0.8),
        (("classification_report", "classes", "with_mask", "precision"), 0.5),
        (("classification_report", "classes", "mask_incorrect", "support"), 4),
        (("ece",), 0.2),  # confidence 0.8 everywhere, accuracy 0.6
        (("ece_bins",), 10),
        (("info", "model"), "mobilenet_v3_small"),
        (("info", "epochs"), 5),
        (("info", "bad"), None),  # NaN -> null
        (("info", "title"), "Test run"),
        (("history", "best_epoch"), 2),
        (("history", "val_loss"), HISTORY["val_loss"]),
        (("macro_f1",), 38 / 63),
    ],
)
def test_full_report_json_values(full_report, key, expected):
    out, metrics = full_report
    loaded = json.loads((out / "metrics.json").read_text())
    assert loaded == metrics
    value = loaded
    for k in key:
        value = value[k]
    if isinstance(expected, float):
        assert value == pytest.approx(expected)
    else:
        assert value == expected


def test_full_report_by_size(full_report):
    out, metrics = full_report
    by_size = {row["bin"]: row for row in metrics["by_size"]}
    assert {b: r["n"] for b, r in by_size.items()} == {"<16": 3, "16-32": 3, "32-64": 1, "64+": 3}
    # rows true, columns predicted: 16-32 holds with_mask->mask_incorrect, without_mask right
    # and without_mask->with_mask
    assert by_size["16-32"]["confusion"] == [[0, 0, 1], [1, 1, 0], [0, 0, 0]]
    assert by_size["64+"]["confusion"] == [[0, 0, 0], [0, 0, 0], [1, 1, 1]]
    assert metrics["files"] == [
        "metrics.json",
        "classification_report.txt",
        "confusion_matrix.png",
        "curves.png",
        "report.md",
    ]


def test_full_report_text_and_markdown(full_report):
    out, _ = full_report
    text = (out / "classification_report.txt").read_text()
    assert "Test run" in text and "macro avg" in text and "no_mask" in text
    md = (out / "report.md").read_text()
    assert md.startswith("# Test run\n")
    for piece in (
        "## Per-class results",
        "| with_mask | 0.500 | 0.667 | 0.571 | 3 |",
        "## Mask vs no mask",
        "`with_mask` or `mask_incorrect`",
        "## By face size",
        "| 16-32 | 3 |",
        "### Confusion matrix by face size",
        "| 16-32 | **without_mask** | 1 | 1 | 0 |",
        "| 64+ | **mask_incorrect** | 1 | 1 | 1 |",
        "## Confusion matrix",
        "| **with_mask** | 2 (66.7%) | 0 (0.0%) | 1 (33.3%) | 3 |",
        "![Confusion matrix](confusion_matrix.png)",
        "![Training curves](curves.png)",
        "Best epoch: **3** (index 2)",
        "| model | mobilenet_v3_small |",
    ):
        assert piece in md, piece
    assert "| 32-64 | **with_mask** |" not in md  # classes absent from a bin get no row


def test_report_without_history(tmp_path):
    metrics = write_report(tmp_path, Y_TRUE, Y_PRED, _probs(Y_PRED), NAMES)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "classification_report.txt",
        "confusion_matrix.png",
        "metrics.json",
        "report.md",
    ]
    assert "curves.png" not in (tmp_path / "report.md").read_text()
    loaded = json.loads((tmp_path / "metrics.json").read_text())
    assert "history" not in loaded and "by_size" not in loaded
    assert loaded == metrics
    _png_size(tmp_path / "confusion_matrix.png")


def test_report_empty_input(tmp_path):
    metrics = write_report(
        tmp_path,
        [],
        [],
        np.zeros((0, 3)),
        NAMES,
        sizes=[],
        history={"train_loss": [], "val_loss": []},
    )
    for name in (
        "metrics.json",
        "classification_report.txt",
        "confusion_matrix.png",
        "curves.png",
        "report.md",
    ):
        assert (tmp_path / name).is_file(), name
    loaded = json.loads((tmp_path / "metrics.json").read_text())
    assert loaded == metrics
    assert loaded["n"] == 0
    assert loaded["accuracy"] == 0.0
    assert loaded["confusion_matrix"] == [[0, 0, 0]] * 3
    assert loaded["two_class"]["confusion"] == [[0, 0], [0, 0]]
    assert loaded["ece"] == 0.0
    assert [row["n"] for row in loaded["by_size"]] == [0, 0, 0, 0]
    assert all(row["accuracy"] is None for row in loaded["by_size"])
    _png_size(tmp_path / "confusion_matrix.png")
    _png_size(tmp_path / "curves.png")


def test_report_without_probs_or_mask_classes(tmp_path):
    # Class names with no mask/no-mask meaning: the two-class view is skipped, not an error.
    metrics = write_report(tmp_path, [0, 1, 1], [0, 1, 0], None, ("cat", "dog"))
    assert metrics["two_class"] is None
    assert metrics["ece"] is None
    md = (tmp_path / "report.md").read_text()
    assert "Mask vs no mask" not in md and "calibration" not in md


def test_report_rejects_bad_labels(tmp_path):
    with pytest.raises(ValueError):
        write_report(tmp_path, [0, 5], [0, 1], None, NAMES)


def test_module_import_does_not_import_matplotlib():
    code = ("import sys, maskwatch.evaluate.report; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_missing_matplotlib_error_names_the_extra(tmp_path, monkeypatch):
    # A None entry in sys.modules makes importing that module raise ImportError.
    for name in (
        "matplotlib",
        "matplotlib.figure",
        "matplotlib.backends",
        "matplotlib.backends.backend_agg",
    ):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"maskwatch\[train\]"):
        write_report(tmp_path, [0], [0], None, NAMES)
