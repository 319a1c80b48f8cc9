"""Per-face image quality: is a face bright, sharp and large enough for its mask label
to be trusted?

The mask classifier answers confidently on faces it cannot see: on the shared clip,
where nobody wears a mask, 90 of the 102 mask labels shown were on faces whose box had
a mean luma of 9-13 (of 255) and a Laplacian variance of 2-4, against a median of 35
and 60 on the faces it labelled right. :func:`face_quality` measures those figures on
the classifier's own input crops (no second crop is cut), and a :class:`QualityRule`
says which faces are judged at all; the others are shown as
:data:`~maskwatch.types.UNKNOWN_MASK` ("cannot judge"). The thresholds are settings
(:class:`~maskwatch.engine.EngineSettings`), chosen from the figures that
``maskwatch evaluate`` reports by luma and sharpness.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from maskwatch.config import DEFAULT_MIN_LUMA

__all__ = ["DEFAULT_RULE", "SHARPNESS_SIDE", "FaceQuality", "QualityRule", "face_quality"]

#: Side in pixels of the grey face image whose Laplacian variance is the sharpness: one
#: scale for every face, so that a large face is not called sharper for its pixel count.
SHARPNESS_SIDE = 64


class FaceQuality(NamedTuple):
    """Quality measures of N faces, one array each (see :func:`face_quality`).

    Attributes:
        luma: (N,) float32 mean luma (BT.601, 0-255) of the face region.
        sharpness: (N,) float32 variance of the Laplacian of the face region in grey,
            resized to ``SHARPNESS_SIDE`` px square.
        size: (N,) float32 shorter side of the face box, pixels of the analysed image.
    """

    luma: np.ndarray
    sharpness: np.ndarray
    size: np.ndarray


def face_quality(crops: np.ndarray, sizes: np.ndarray, margin: float) -> FaceQuality:
    """Brightness, sharpness and size of faces, from the mask classifier's crops.

    Args:
        crops: (N, S, S, 3) BGR uint8 crops cut by :func:`~maskwatch.ops.crop.face_crops`
            with ``margin`` (the classifier's own input).
        sizes: (N,) shorter side of each face box in pixels (:attr:`Faces.sizes
            <maskwatch.types.Faces.sizes>`), passed through as ``size``.
        margin: the crops' context on each side, as a fraction of the box's longer side;
            only the central part without it (the box's square) is measured.

    Returns:
        :class:`FaceQuality`.

    Cost: 24-29 microseconds per face (the shipped model's 112 px crops; 246 faces of
    the shared clip, best of 7 runs, on the 2-core development machine while it trained
    a model), against 2.5-4 ms for a classification. Cutting the crop costs more than
    measuring it (about 0.15 ms per face on the same loaded machine); the live engine
    pays both on every face of every frame while a rule is on, the classification only
    on the faces that are due.
    """
    crops = np.asarray(crops)
    n = len(crops)
    sizes = np.asarray(sizes, np.float32).reshape(-1)
    if len(sizes) != n:
        raise ValueError(f"face_quality: {n} crops but {len(sizes)} sizes")
    luma = np.zeros(n, np.float32)
    sharpness = np.zeros(n, np.float32)
    if n == 0:
        return FaceQuality(luma, sharpness, sizes)
    side = crops.shape[1]
    inner = max(int(round(side / (1.0 + 2.0 * max(float(margin), 0.0)))), 1)
    lo = (side - inner) // 2
    centre = crops[:, lo:lo + inner, lo:lo + inner]
    for i in range(n):
        grey = cv2.cvtColor(centre[i], cv2.COLOR_BGR2GRAY)
        luma[i] = cv2.mean(grey)[0]
        # Linear, not area, resampling: the face region is at most twice the side
        # (crops of 112-128 px), where it aliases little, and costs a third.
        small = cv2.resize(grey, (SHARPNESS_SIDE, SHARPNESS_SIDE),
                           interpolation=cv2.INTER_LINEAR)
        # 3x3 kernel on uint8: whole numbers within +-1020, exact in int16.
        _, std = cv2.meanStdDev(cv2.Laplacian(small, cv2.CV_16S))
        sharpness[i] = float(std[0, 0]) ** 2
    return FaceQuality(luma, sharpness, sizes)


@dataclass(frozen=True)
class QualityRule:
    """Which faces the mask classifier's answer is trusted on.

    A face is judged when it reaches every threshold that is on; the others are shown
    as :data:`~maskwatch.types.UNKNOWN_MASK`. Any threshold may be 0 (off).

    Attributes:
        min_luma: least mean luma (0-255) of the face region.
        min_sharpness: least Laplacian variance (see :func:`face_quality`).
        min_size: least shorter side of the face box, pixels.

    Raises:
        ValueError: on construction, for a negative or non-finite threshold.

    Example:
        >>> rule = QualityRule(min_luma=15)
        >>> rule.judgeable(np.array([9.0, 35.0]), np.array([3.0, 60.0]),
        ...                np.array([40.0, 40.0])).tolist()
        [False, True]
    """

    min_luma: float = 0.0
    min_sharpness: float = 0.0
    min_size: float = 0.0

    def __post_init__(self) -> None:
        for name in ("min_luma", "min_sharpness", "min_size"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be 0 (off) or more, got {value!r}")

    @property
    def active(self) -> bool:
        """True when any threshold is on (otherwise every face is judged, unmeasured)."""
        return self.min_luma > 0 or self.min_sharpness > 0 or self.min_size > 0

    def judgeable(self, luma: np.ndarray, sharpness: np.ndarray,
                  size: np.ndarray) -> np.ndarray:
        """(N,) bool: which faces reach every threshold that is on."""
        luma = np.asarray(luma, np.float32).reshape(-1)
        ok = np.ones(len(luma), bool)
        if self.min_luma > 0:
            ok &= luma >= self.min_luma
        if self.min_sharpness > 0:
            ok &= np.asarray(sharpness, np.float32).reshape(-1) >= self.min_sharpness
        if self.min_size > 0:
            ok &= np.asarray(size, np.float32).reshape(-1) >= self.min_size
        return ok

    def judge(self, quality: FaceQuality) -> np.ndarray:
        """:meth:`judgeable` of a :class:`FaceQuality`."""
        return self.judgeable(quality.luma, quality.sharpness, quality.size)


#: The rule the engine applies unless told otherwise: faces darker than a mean luma of 8.
#: Chosen on the shared clip (``maskwatch evaluate --task tracking ... --truth
#: without_mask``, shipped classifier, contested tracks on): the lowest luma cut that
#: leaves as few wrong mask labels as any (none: 5 of 702 judged face-frames; 8, 9 and 10:
#: 2), with 6.7% of face-frames unjudged (9: 9.0%, 10: 10.6%, over the 10% allowed).
#: Under a luma of 10 the classifier is wrong on 18% of that clip's faces, against under
#: 2% from 15 up. Sharpness and size stay off: no cut of them separated wrong labels from
#: right ones there or on mask-scenes.
DEFAULT_RULE = QualityRule(min_luma=DEFAULT_MIN_LUMA)
