"""Face quality measures and the rule that decides which faces are judged."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from maskwatch.ops.quality import DEFAULT_RULE, QualityRule, face_quality


@pytest.fixture(scope="module")
def lfw_crops(datasets):
    """Classifier crops of real faces (LFW), with their sizes and the crop margin."""
    from maskwatch.models.detector import YuNetDetector
    from maskwatch.models.mask_classifier import MaskClassifier
    from maskwatch.ops.image import read_image

    clf = MaskClassifier()
    det = YuNetDetector()
    crops, sizes = [], []
    for path in sorted((datasets / "lfw-identities" / "images").rglob("*_0001.jpg"))[:8]:
        image = read_image(path)
        faces = det.detect(image)
        faces = faces[[int(np.argmax(faces.scores))]]
        crops.append(clf.crops(image, faces))
        sizes.append(faces.sizes)
    return np.concatenate(crops), np.concatenate(sizes), clf.info.margin


def test_darker_and_blurred_copies_measure_lower(lfw_crops):
    crops, sizes, margin = lfw_crops
    q = face_quality(crops, sizes, margin)
    assert q.luma.shape == q.sharpness.shape == q.size.shape == (len(crops),)
    assert q.luma.dtype == np.float32 and q.sharpness.dtype == np.float32
    np.testing.assert_allclose(q.size, sizes)
    assert (q.luma > 40).all() and (q.sharpness > 10).all()  # well-lit press photos
    dark = (crops.astype(np.float32) * 0.2).astype(np.uint8)
    qd = face_quality(dark, sizes, margin)
    np.testing.assert_allclose(qd.luma, 0.2 * q.luma, atol=1.5)  # luma is linear in light
    assert (qd.sharpness < q.sharpness).all()  # less contrast, fewer edges
    blurred = np.stack([cv2.GaussianBlur(c, (0, 0), 3) for c in crops])
    qb = face_quality(blurred, sizes, margin)
    assert (qb.sharpness < 0.3 * q.sharpness).all()
    np.testing.assert_allclose(qb.luma, q.luma, atol=2.0)  # blur keeps the mean


def test_only_the_face_without_the_margin_is_measured():
    # a 130 px crop with margin 0.15: the face is the central 100 px
    crop = np.zeros((1, 130, 130, 3), np.uint8)
    crop[:, 15:115, 15:115] = 200
    q = face_quality(crop, np.array([50.0]), 0.15)
    assert q.luma[0] == pytest.approx(200, abs=0.5) and q.sharpness[0] == pytest.approx(0)
    whole = face_quality(crop, np.array([50.0]), 0.0)  # no margin: the dark border counts
    assert whole.luma[0] < 130
    empty = face_quality(np.zeros((0, 112, 112, 3), np.uint8), np.zeros(0), 0.15)
    assert empty.luma.shape == (0,)
    with pytest.raises(ValueError, match="sizes"):
        face_quality(crop, np.zeros(2), 0.15)


def test_rule():
    luma = np.array([6.0, 7.9, 8.0, 40.0, 40.0])
    sharp = np.array([2.0, 50.0, 50.0, 3.0, 60.0])
    size = np.array([60.0, 60.0, 60.0, 60.0, 20.0])
    assert DEFAULT_RULE == QualityRule(min_luma=8.0) and DEFAULT_RULE.active
    assert DEFAULT_RULE.judgeable(luma, sharp, size).tolist() == [False, False, True, True, True]
    both = QualityRule(min_luma=8, min_sharpness=5)
    assert both.judgeable(luma, sharp, size).tolist() == [False, False, True, False, True]
    sized = QualityRule(min_size=24)
    assert sized.judgeable(luma, sharp, size).tolist() == [True, True, True, True, False]
    off = QualityRule()
    assert not off.active and off.judgeable(luma, sharp, size).all()
    for bad in ({"min_luma": -1}, {"min_sharpness": float("nan")}, {"min_size": float("inf")}):
        with pytest.raises(ValueError, match="0 \\(off\\) or more"):
            QualityRule(**bad)


def test_engine_settings_carry_the_rule():
    from maskwatch.engine import EngineSettings

    assert EngineSettings().quality_rule() == DEFAULT_RULE
    s = EngineSettings(min_luma=0, min_sharpness=5, min_face_size=24)
    rule = QualityRule(min_luma=0, min_sharpness=5, min_size=24)
    assert s.quality_rule() == rule
    assert s.pipeline_config(live=True).quality == rule
    assert s.pipeline_config(live=False).quality == rule
    with pytest.raises(ValueError, match="min_luma"):
        EngineSettings(min_luma=-3)
