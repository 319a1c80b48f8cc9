"""The mask evaluation's figures by face quality and under a quality rule, on real faces."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def lit_and_dark_faces(datasets):
    """Classifier crops of 12 LFW faces (nobody wears a mask) and of the same photos
    darkened to a third of their light and to a twentieth (sources ``lit``, ``dim``,
    ``dark``)."""
    from maskwatch.models.detector import YuNetDetector
    from maskwatch.models.mask_classifier import MaskClassifier
    from maskwatch.ops.image import read_image
    from maskwatch.train.data import FaceSet

    clf = MaskClassifier()
    det = YuNetDetector()
    rows: dict[str, list] = {"crops": [], "sizes": [], "sources": [], "paths": []}
    for path in sorted((datasets / "lfw-identities" / "images").rglob("*_0002.jpg"))[:12]:
        image = read_image(path)
        faces = det.detect(image)
        faces = faces[[int(np.argmax(faces.scores))]]
        for source, light in (("lit", 1.0), ("dim", 1 / 3), ("dark", 1 / 20)):
            copy = (image.astype(np.float32) * light).round().astype(np.uint8)
            rows["crops"].append(clf.crops(copy, faces)[0])
            rows["sizes"].append(float(faces.sizes[0]))
            rows["sources"].append(source)
            rows["paths"].append(str(path))
    n = len(rows["crops"])
    fs = FaceSet(crops=np.stack(rows["crops"]), labels=np.full(n, 1, np.int64),
                 sizes=np.array(rows["sizes"], np.float32),
                 groups=np.array(rows["paths"]), sources=np.array(rows["sources"]),
                 paths=np.array(rows["paths"]), detected=np.ones(n, bool))
    return clf, fs


def test_figures_by_quality_and_on_judged_faces(lit_and_dark_faces, tmp_path):
    pytest.importorskip("matplotlib")
    from maskwatch.evaluate.mask import evaluate_faceset
    from maskwatch.ops.quality import QualityRule

    clf, fs = lit_and_dark_faces
    plain = evaluate_faceset(clf, fs, tmp_path / "plain")
    assert "judged" not in plain and "unknown_share" not in plain
    by_luma = {r["bin"]: r for r in plain["by_luma"]}
    assert sum(r["n"] for r in by_luma.values()) == len(fs) == 36
    assert by_luma["<10"]["n"] == 12  # the twentieth of the light: every dark copy
    assert sum(r["n"] for r in plain["by_sharpness"]) == 36
    assert set(plain["by_luma"][0]) >= {"bin", "n", "accuracy", "two_class_accuracy"}

    rule = QualityRule(min_luma=15)
    res = evaluate_faceset(clf, fs, tmp_path / "rule", rule=rule)
    # the figures that existed before are the same with a rule
    for key in ("n", "accuracy", "two_class_accuracy", "macro_f1", "by_size"):
        assert res[key] == plain[key]
    assert res["quality_rule"] == {"min_luma": 15, "min_sharpness": 0, "min_size": 0}
    assert res["unknown_n"] == 12 and res["unknown_share"] == pytest.approx(1 / 3)
    assert res["judged"]["n"] == 24
    assert res["by_source"]["dark"]["unknown_share"] == 1.0
    assert res["by_source"]["dark"]["judged"]["n"] == 0
    assert res["by_source"]["lit"]["unknown_share"] == 0.0
    assert res["by_source"]["lit"]["judged"]["accuracy"] == 1.0  # LFW faces, well lit
    saved = json.loads((tmp_path / "rule" / "metrics.json").read_text())
    assert saved["judged"]["n"] == 24
    report = (tmp_path / "rule" / "report.md").read_text()
    assert "## By mean luma of the face" in report and "## Quality rule" in report
    assert "12 faces (33.33%) cannot be judged" in report
