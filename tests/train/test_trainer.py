"""A tiny end-to-end training run and the exported model's guarantees."""

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training tests need the [train] extra")

from maskwatch.cli import main  # noqa: E402
from maskwatch.models.mask_classifier import MaskClassifier, read_model_info  # noqa: E402
from maskwatch.types import MASK_CLASSES  # noqa: E402


@pytest.fixture(scope="module")
def tiny_folder(datasets, tmp_path_factory):
    """A few dozen real images per class, plus one corrupt and one empty file."""
    root = tmp_path_factory.mktemp("tiny")
    for cls in ("with_mask", "without_mask"):
        (root / cls).mkdir()
        files = sorted((datasets / "mask-classification" / cls).iterdir())[::97][:14]
        for f in files:
            shutil.copy(f, root / cls / f.name)
    (root / "with_mask" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (root / "without_mask" / "empty.png").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def tiny_run(datasets, tiny_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    code = main([
        "train", f"folder:{tiny_folder}", f"voc:{datasets / 'mask-scenes'}",
        "--out", str(out), "--epochs", "1", "--input-size", "64", "--batch-size", "16",
        "--max-per-source", "30", "--quiet",
    ])
    assert code == 0
    return out


@pytest.mark.slow
def test_tiny_run_writes_every_report_file(tiny_run):
    for name in ("model.onnx", "metrics.json", "report.md", "classification_report.txt",
                 "confusion_matrix.png", "curves.png", "data.json"):
        assert (tiny_run / name).is_file(), name
        assert (tiny_run / name).stat().st_size > 0
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["n"] > 0
    assert "two_class" in metrics or "two_class_accuracy" in metrics
    assert len(metrics["by_source"]) == 2 and "voc:mask-scenes" in metrics["by_source"]
    assert metrics["info"]["onnx_torch_max_abs_diff"] < 1e-4
    assert (tiny_run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_corrupt_files_are_skipped_and_counted(tiny_run):
    data = json.loads((tiny_run / "data.json").read_text())
    reasons = " ".join(s["reason"] for s in data["skipped_files"])
    assert data["skipped"] >= 2
    assert "empty" in reasons and "not a readable image" in reasons


@pytest.mark.slow
def test_exported_model_loads_with_its_metadata(tiny_run):
    info = read_model_info(tiny_run / "model.onnx")
    assert info.input_size == 64 and info.class_names == list(MASK_CLASSES)
    assert info.backbone == "efficientnet_lite0"
    assert info.metrics["all"]["n"] > 0
    assert info.training["config"]["epochs"] == 1
    clf = MaskClassifier(tiny_run / "model.onnx")
    probs = clf.predict_crops(np.zeros((3, 64, 64, 3), np.uint8))
    assert probs.shape == (3, 3)


@pytest.mark.slow
def test_evaluate_reproduces_the_test_split(tiny_run, tiny_folder, datasets, tmp_path):
    out = tmp_path / "eval"
    code = main([
        "evaluate", f"folder:{tiny_folder}", f"voc:{datasets / 'mask-scenes'}", "--model",
        str(tiny_run / "model.onnx"), "--out", str(out), "--split", "test",
        "--max-per-source", "30", "--quiet",
    ])
    assert code == 0
    trained = json.loads((tiny_run / "metrics.json").read_text())
    evaluated = json.loads((out / "metrics.json").read_text())
    assert evaluated["n"] == trained["n"]
    assert evaluated["accuracy"] == pytest.approx(trained["accuracy"])
