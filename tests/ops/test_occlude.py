"""Tests for maskwatch.ops.occlude: hands, heads and objects over the mouth (not masks)."""

from __future__ import annotations

import glob

import cv2
import numpy as np
import pytest
from tests.ops.test_synthmask import BOX, FRONTAL, _face_image

from maskwatch.ops.occlude import COVER_FAMILIES, COVER_KINDS, render_cover


def _lower_and_upper_change(before: np.ndarray, after: np.ndarray) -> tuple[float, float]:
    """Mean absolute change below the nose (mouth, chin) and around the eyes."""
    diff = np.abs(after.astype(np.int16) - before.astype(np.int16)).mean(2)
    lower = diff[118:160, 70:130].mean()  # mouth at y 132, chin above 168
    upper = diff[78:100, 70:130].mean()  # eyes at y 90
    return float(lower), float(upper)


@pytest.mark.parametrize("family", COVER_FAMILIES)
@pytest.mark.parametrize("kind", COVER_KINDS)
def test_every_cover_hides_the_mouth_and_leaves_the_eyes(kind, family):
    img = _face_image()
    donor = _face_image()[:, ::-1].copy()
    donor[:40] = (20, 25, 30)  # dark hair on top
    out = render_cover(img, FRONTAL, BOX, kind=kind, family=family,
                       rng=np.random.default_rng(3), donors=[(donor, BOX)])
    assert out.shape == img.shape and out.dtype == np.uint8
    lower, upper = _lower_and_upper_change(img, out)
    assert lower > 15, (kind, family, lower)
    assert upper < lower / 3, (kind, family, lower, upper)
    assert not np.shares_memory(out, img)


def test_the_input_is_not_modified_and_the_same_seed_gives_the_same_picture():
    img = _face_image()
    copy = img.copy()
    a = render_cover(img, FRONTAL, BOX, rng=np.random.default_rng(5))
    b = render_cover(img, FRONTAL, BOX, rng=np.random.default_rng(5))
    assert np.array_equal(img, copy)
    assert np.array_equal(a, b)


def test_the_families_differ_in_shape():
    """Training and held-out hands are different shapes (an open hand, a fist)."""
    img = _face_image()
    outlines = {}
    for family in COVER_FAMILIES:
        covers = [render_cover(img, FRONTAL, BOX, kind="hand", family=family,
                               rng=np.random.default_rng(s)) != img for s in range(12)]
        outlines[family] = np.mean([c.any(2).sum() for c in covers])
    assert outlines["train"] != pytest.approx(outlines["held_out"], rel=0.05)


def test_bad_arguments_say_what_is_wrong():
    img = _face_image()
    with pytest.raises(ValueError, match="donors"):
        render_cover(img, FRONTAL, BOX, kind="head")
    with pytest.raises(ValueError, match="kind"):
        render_cover(img, FRONTAL, BOX, kind="scarf")
    with pytest.raises(ValueError, match="family"):
        render_cover(img, FRONTAL, BOX, family="test")
    with pytest.raises(ValueError, match="BGR uint8"):
        render_cover(img.astype(np.float32), FRONTAL, BOX)


def test_on_real_photos_the_detector_still_finds_most_covered_faces(datasets):
    """The covered faces stay faces for YuNet (so the crops are the live detector's)."""
    from maskwatch.models.detector import YuNetDetector

    det = YuNetDetector(score_threshold=0.5, max_side=1024)
    paths = sorted(glob.glob(str(datasets / "lfw-identities" / "images" / "*" / "*")))[::53][:20]
    rng = np.random.default_rng(0)
    donors, found, tried = [], 0, 0
    for p in paths:
        img = cv2.imread(p)
        faces = det.detect(img)
        if not len(faces):
            continue
        i = int(np.argmax(faces.widths * faces.heights))
        if donors:
            out = render_cover(img, faces.landmarks[i], faces.boxes[i], rng=rng, donors=donors)
            tried += 1
            found += bool(len(det.detect(out)))
        donors.append((img, faces.boxes[i]))
    assert tried >= 15
    assert found >= 0.7 * tried, (found, tried)
