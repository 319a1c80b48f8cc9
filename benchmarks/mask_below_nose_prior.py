"""Experiment: shift the mask classifier's prior towards below the nose.

Classifies the mask-scenes faces of the validation and test splits (the training
split's seed and fractions) with a model file, adds ``b`` to the log-probability of
``mask_incorrect`` and prints, per split and for faces of 32 px and more: 3-class and
2-class accuracy, macro-F1, below-the-nose recall and the masks worn properly or
faces without a mask that the shift calls below the nose.

    python benchmarks/mask_below_nose_prior.py [MODEL.onnx]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from maskwatch.models.detector import YuNetDetector
from maskwatch.models.mask_classifier import MaskClassifier
from maskwatch.train.data import CropMaker, SourceSpec, assign_splits, load_sources
from maskwatch.types import MASK_CLASSES

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def macro_f1(t: np.ndarray, p: np.ndarray) -> float:
    f = []
    for c in range(len(MASK_CLASSES)):
        tp = ((t == c) & (p == c)).sum()
        f.append(2 * tp / max((t == c).sum() + (p == c).sum(), 1))
    return float(np.mean(f))


def main() -> None:
    clf = MaskClassifier(sys.argv[1] if len(sys.argv) > 1 else None)
    maker = CropMaker(YuNetDetector(score_threshold=0.5, max_side=1024), clf.info.input_size,
                      clf.info.margin)
    fs = load_sources([SourceSpec.parse(f"voc:{DATA / 'mask-scenes'}")], maker, seed=0,
                      progress=False)
    fs = assign_splits(fs, fractions=(0.7, 0.1, 0.2), seed=0)
    probs = clf.predict_crops(fs.crops)[:, [clf.class_names.index(c) for c in MASK_CLASSES]]
    logp = np.log(probs + 1e-9)
    for b in (0.0, 0.5, 1.0, 1.5, 2.0, 3.0):
        shifted = logp.copy()
        shifted[:, 2] += b
        pred = shifted.argmax(1)
        for split in ("val", "test"):
            sel = (fs.splits == split) & (fs.sizes >= 32)
            t, p = fs.labels[sel], pred[sel]
            print(f"b={b:+.1f} {split} >= 32 px: n={sel.sum()} 3-class {np.mean(p == t):.2%} "
                  f"2-class {np.mean((p != 1) == (t != 1)):.2%} macro-F1 {macro_f1(t, p):.3f} "
                  f"below-nose {(p[t == 2] == 2).sum()}/{(t == 2).sum()} "
                  f"proper->below {((t == 0) & (p == 2)).sum()} "
                  f"none->below {((t == 1) & (p == 2)).sum()}")


if __name__ == "__main__":
    main()
