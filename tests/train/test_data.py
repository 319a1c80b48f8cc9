"""Tests for maskwatch.train.data's rendered sources (synthetic and covered)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from maskwatch.train.data import CropMaker, DataError, SourceSpec, load_sources
from maskwatch.types import MASK_CLASSES


@pytest.fixture(scope="module")
def maker():
    from maskwatch.models.detector import YuNetDetector

    return CropMaker(YuNetDetector(score_threshold=0.5, max_side=1024), 112, 0.15)


def test_synthetic_gives_five_variants_per_photo_grouped_by_person(datasets, maker):
    spec = SourceSpec.parse(f"synthetic:{datasets / 'lfw-identities' / 'images'}")
    fs = load_sources([spec], maker, templates_dir=datasets / "mask-templates", progress=False,
                      max_per_source=6)
    tags = Counter(p.rsplit("#", 1)[1] for p in fs.paths.tolist())
    photos = len({p.rsplit("#", 1)[0] for p in fs.paths.tolist()})
    assert tags == {t: photos for t in ("without_mask", "with_mask", "mask_incorrect",
                                        "mask_incorrect2", "covered")}
    labels = {p.rsplit("#", 1)[1]: MASK_CLASSES[int(y)]
              for p, y in zip(fs.paths.tolist(), fs.labels.tolist(), strict=True)}
    assert labels["covered"] == "without_mask"
    assert labels["mask_incorrect2"] == "mask_incorrect"
    for photo in {p.rsplit("#", 1)[0] for p in fs.paths.tolist()}:
        groups = {g for p, g in zip(fs.paths.tolist(), fs.groups.tolist(), strict=True)
                  if p.startswith(photo + "#")}
        assert len(groups) == 1


def test_covered_gives_only_covered_unmasked_faces(datasets, maker):
    spec = SourceSpec.parse(f"covered:{datasets / 'lfw-train' / 'images'}")
    assert spec.kind == "covered" and spec.name == "covered:lfw-train"
    fs = load_sources([spec], maker, progress=False, max_per_source=8)
    assert 6 <= len(fs) <= 8
    assert set(fs.labels.tolist()) == {MASK_CLASSES.index("without_mask")}
    assert all(p.endswith("#covered") for p in fs.paths.tolist())
    assert len(set(fs.groups.tolist())) == len(fs)  # one photo per person: one group each
    # most covered faces are still found by the detector, as live
    assert np.mean(fs.detected) >= 0.6


def test_a_covered_source_without_person_folders_is_one_clear_error(tmp_path, maker):
    (tmp_path / "x.jpg").write_bytes(b"not a folder of people")
    with pytest.raises(DataError, match="one folder of photos per person"):
        load_sources([SourceSpec.parse(f"covered:{tmp_path}")], maker, progress=False)
