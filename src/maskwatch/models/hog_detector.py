"""dlib's HOG face detector (face_recognition), beside YuNet and the res10 SSD.

Optional, like :mod:`maskwatch.models.dlib_embedder` (``pip install 'maskwatch[dlib]'``
and ``face_recognition`` with ``--no-deps``). Kept for comparison: it finds frontal
faces of about 40 px and more (80 px with ``upsample=0``) and misses many masked
faces, since its HOG template expects a visible nose and mouth.
"""

from __future__ import annotations

import numpy as np

from maskwatch.models.dlib_embedder import load_face_recognition
from maskwatch.types import Faces

# 68-point (iBUG) indices giving maskwatch's five landmarks: eye on the image's left
# (mean of 36-41), eye on the image's right (42-47), nose tip (30), mouth corners (48, 54).
_LEFT_EYE, _RIGHT_EYE, _NOSE_TIP, _MOUTH_LEFT, _MOUTH_RIGHT = (slice(36, 42), slice(42, 48),
                                                               30, 48, 54)


class HogDetector:
    """dlib's HOG + linear SVM frontal face detector (``face_recognition.face_locations``).

    Boxes are face_recognition's, in the image's pixels. HOG gives no calibrated
    confidence, so every face has score 1.0. Five landmarks in YuNet's order are
    taken from dlib's 68-point shape predictor (about 2 ms per face), so enrolment
    can draw synthetic masks on HOG faces.

    Args:
        upsample: times the image is doubled before detection (face_recognition's
            ``number_of_times_to_upsample``, default 1, as in face_recognition): 1 finds
            faces down to about 40 px, at four times the cost of 0.
        landmarks: also predict the five landmarks (needed for synthetic masks and
            for SFace alignment).

    Raises:
        DlibUnavailable: the ``[dlib]`` extra or face_recognition is not installed.
    """

    name = "hog"

    def __init__(self, upsample: int = 1, landmarks: bool = True) -> None:
        self._fr = load_face_recognition()
        self.upsample = max(int(upsample), 0)
        self.landmarks = bool(landmarks)

    def detect(self, image: np.ndarray) -> Faces:
        """Find faces in a BGR uint8 image; boxes (and landmarks) in its pixels."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError("expected a BGR uint8 image (H, W, 3), "
                             f"got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        if h < 2 or w < 2:
            return Faces()
        rgb = np.ascontiguousarray(image[:, :, ::-1])
        css = self._fr.face_locations(rgb, number_of_times_to_upsample=self.upsample, model="hog")
        if not css:
            return Faces()
        boxes = np.array([[left, top, right, bottom] for top, right, bottom, left in css],
                         np.float32)
        if not self.landmarks:
            return Faces(boxes=boxes)
        import dlib  # noqa: PLC0415 - present whenever face_recognition imported

        # the model face_landmarks(model="large") runs
        predictor = self._fr.api.pose_predictor_68_point
        pts = np.zeros((len(boxes), 5, 2), np.float32)
        for i, (top, right, bottom, left) in enumerate(css):
            shape = predictor(rgb, dlib.rectangle(int(left), int(top), int(right), int(bottom)))
            ibug = np.array([(shape.part(j).x, shape.part(j).y) for j in range(68)], np.float32)
            pts[i] = _five_points(ibug)
        return Faces(boxes=boxes, landmarks=pts)


def _five_points(ibug: np.ndarray) -> np.ndarray:
    """(68, 2) iBUG points -> (5, 2) in YuNet order: eyes (image left, right), nose tip,
    mouth corners (image left, right)."""
    return np.stack([ibug[_LEFT_EYE].mean(0), ibug[_RIGHT_EYE].mean(0), ibug[_NOSE_TIP],
                     ibug[_MOUTH_LEFT], ibug[_MOUTH_RIGHT]]).astype(np.float32)
