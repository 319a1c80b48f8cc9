"""Drawing results on frames. Style is set once; drawing never changes data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from maskwatch.types import MASK_CLASSES, MASK_LABELS, UNKNOWN_MASK, Faces

#: Box colours by mask state, BGR; a face shown as cannot judge is mid grey.
MASK_COLORS: dict[str, tuple[int, int, int]] = {
    "with_mask": (60, 180, 60),
    "without_mask": (40, 40, 220),
    "mask_incorrect": (0, 160, 255),
    UNKNOWN_MASK: (128, 128, 128),
}
#: A face not classified (yet): light grey, with its detector score.
UNCLASSIFIED_COLOR = (200, 200, 200)
#: JPEG quality of annotated frames sent to viewers (server sources' MJPEG, cluster workers).
JPEG_QUALITY = 80


@dataclass(frozen=True)
class FaceAnnotator:
    """Draws boxes coloured by mask state and a label with the class probability
    ("cannot judge", without one, for a face shown as ``UNKNOWN_MASK``).

    Args:
        thickness: box line width in pixels (scaled up for large frames).
        font_scale: label size relative to a 640-px-wide frame.
    """

    thickness: int = 2
    font_scale: float = 0.5

    def jpeg(self, image: np.ndarray, result: Any) -> bytes | None:
        """:meth:`annotate`, encoded as JPEG (:data:`JPEG_QUALITY`); None if it cannot be."""
        ok, buf = cv2.imencode(".jpg", self.annotate(image, result),
                               [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        return buf.tobytes() if ok else None

    def annotate(self, image: np.ndarray, result: Any) -> np.ndarray:
        """Return a copy of a BGR image with the faces of ``result`` drawn on it.

        Args:
            image: the analysed frame.
            result: a :class:`~maskwatch.pipeline.FrameResult`, or its :class:`Faces`:
                each face's shown mask label, its probability and its name are drawn.
        """
        faces: Faces = getattr(result, "faces", result)
        out = image.copy()
        scale = max(out.shape[1] / 640.0, 0.5)
        th = max(1, int(round(self.thickness * scale)))
        fs = self.font_scale * scale
        names = faces.names
        for i in range(len(faces)):
            x1, y1, x2, y2 = (int(round(v)) for v in faces.boxes[i])
            cls = faces.mask_labels[i]
            if cls == UNKNOWN_MASK:
                color, label = MASK_COLORS[cls], MASK_LABELS[cls]
            elif cls is not None and faces.has_mask_probs:
                color = MASK_COLORS[cls]
                prob = faces.mask_probs[i, MASK_CLASSES.index(cls)]
                label = f"{MASK_LABELS[cls]} {100 * prob:.0f}%"
            else:
                color, label = UNCLASSIFIED_COLOR, f"face {100 * faces.scores[i]:.0f}%"
            if names[i]:
                label = f"{names[i]}: {label}"
            cv2.rectangle(out, (x1, y1), (x2, y2), color, th, cv2.LINE_AA)
            (tw, tht), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
            ty = y1 - 4 if y1 - tht - base - 4 >= 0 else y2 + tht + 4
            lx = max(0, min(x1, out.shape[1] - tw - 4))  # keep the label inside the frame
            cv2.rectangle(out, (lx, ty - tht - base), (lx + tw + 4, ty + base // 2), color, -1)
            cv2.putText(out, label, (lx + 2, ty - base // 2), cv2.FONT_HERSHEY_SIMPLEX, fs,
                        (255, 255, 255), 1, cv2.LINE_AA)
        return out
