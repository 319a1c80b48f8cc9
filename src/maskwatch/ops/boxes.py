"""Box geometry shared by the detector, the tracker and the evaluations."""

from __future__ import annotations

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union of two sets of boxes.

    Args:
        a: (N, 4) xyxy boxes in pixels.
        b: (M, 4) xyxy boxes in pixels.

    Returns:
        (N, M) float32 IoU in [0, 1]; empty boxes give 0.

    Example:
        >>> print(iou_matrix([[0, 0, 10, 10]], [[5, 0, 15, 10], [20, 20, 30, 30]]).round(2))
        [[0.33 0.  ]]
    """
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return (inter / np.maximum(union, 1e-6)).astype(np.float32)


def nearest_to_centre(boxes: np.ndarray, shape: tuple[int, ...]) -> int | None:
    """Index of the box whose centre is nearest the centre of an image of ``shape``
    (the subject of a portrait, such as an LFW photo), or None without boxes."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if len(boxes) == 0:
        return None
    h, w = shape[:2]
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 - w / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 - h / 2
    return int(np.argmin(cx * cx + cy * cy))


def best_overlap(boxes: np.ndarray, box: np.ndarray, min_iou: float = 0.3) -> int | None:
    """Index of the box that overlaps ``box`` most, if its IoU is at least ``min_iou``
    (the same face found again, e.g. after a mask was drawn on it), else None."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if len(boxes) == 0:
        return None
    iou = iou_matrix(np.asarray(box, np.float32).reshape(1, 4), boxes)[0]
    j = int(np.argmax(iou))
    return j if iou[j] >= min_iou else None
