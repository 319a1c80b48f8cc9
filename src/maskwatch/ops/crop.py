"""Face crops and input tensors: one definition for training and for run time.

The mask classifier must see at training time exactly the crop it sees live. Both
call :func:`face_crops` and :func:`crops_to_tensor` with the parameters stored in
the model file's metadata (input size, margin, mean, std), so the two cannot drift.
"""

from __future__ import annotations

import cv2
import numpy as np

#: ImageNet statistics on the 0-255 scale, RGB order.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def crop_region(box: np.ndarray, margin: float) -> tuple[int, int, int]:
    """Square region around a face box.

    Args:
        box: ``x1, y1, x2, y2`` in pixels.
        margin: extra context on each side as a fraction of the box's longer side
            (0.15 adds 15% left, right, above and below).

    Returns:
        ``(x0, y0, side)``: top-left corner and side of the square, in whole pixels;
        the square may extend past the image borders.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1, 1.0) * (1.0 + 2.0 * margin)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    s = max(int(round(side)), 1)
    return int(round(cx - s / 2.0)), int(round(cy - s / 2.0)), s


def face_crop(image: np.ndarray, box: np.ndarray, size: int, margin: float) -> np.ndarray:
    """Cut one square face crop and resize it to ``size`` x ``size``.

    Args:
        image: BGR uint8 (H, W, 3).
        box: face box ``x1, y1, x2, y2`` in pixels.
        size: output side in pixels.
        margin: context around the box, see :func:`crop_region`.

    Returns:
        BGR uint8 (size, size, 3). Parts outside the image repeat the border pixels.
    """
    h, w = image.shape[:2]
    x0, y0, s = crop_region(box, margin)
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + s, w), min(y0 + s, h)
    if xb <= xa or yb <= ya:
        return np.zeros((size, size, 3), np.uint8)
    patch = image[ya:yb, xa:xb]
    pad = (ya - y0, y0 + s - yb, xa - x0, x0 + s - xb)
    if any(pad):
        patch = cv2.copyMakeBorder(patch, *pad, borderType=cv2.BORDER_REPLICATE)
    # INTER_AREA averages when shrinking (no aliasing on large faces); linear when growing.
    interp = cv2.INTER_AREA if s > size else cv2.INTER_LINEAR
    return cv2.resize(patch, (size, size), interpolation=interp)


def face_crops(image: np.ndarray, boxes: np.ndarray, size: int, margin: float) -> np.ndarray:
    """Crops of every box, stacked: (N, size, size, 3) BGR uint8."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack([face_crop(image, b, size, margin) for b in boxes])


def brighten_dark(crops: np.ndarray, below: float, to: float) -> np.ndarray:
    """Gamma-brighten the crops whose mean luma is under ``below`` to about ``to``.

    Faces in dim rooms and back-lit faces reach the classifier at a mean luma of 9-13
    (of 255), where a mouth and a dark mask look alike: on the shared clip, where
    nobody wears a mask, 90 of the 102 labels that said a mask were on such faces.
    A gamma curve lifts the shadows where those faces lie and leaves brighter crops as
    they are, so the classifier's input spans the same range in every light. The
    crops that are not dark are returned untouched (the same array when none is).

    Args:
        crops: (N, S, S, 3) BGR uint8.
        below: mean luma (0-255, of the whole crop) under which a crop is brightened.
        to: the mean luma aimed at (the gamma that maps the crop's mean to ``to``).
    """
    crops = np.asarray(crops)
    luma = crops.reshape(len(crops), -1, 3).astype(np.float32) @ np.float32([0.114, 0.587, 0.299])
    means = luma.mean(1)
    dark = np.flatnonzero(means < below)
    if not len(dark):
        return crops
    out = crops.copy()
    levels = np.arange(256, dtype=np.float64) / 255.0
    for i in dark:
        m = min(max(float(means[i]), 1.0), to) / 255.0
        gamma = np.log(to / 255.0) / np.log(m)
        lut = np.clip(np.round(255.0 * levels ** gamma), 0, 255).astype(np.uint8)
        out[i] = cv2.LUT(crops[i], lut)
    return out


def crops_to_tensor(
    crops: np.ndarray,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    low_light: tuple[float, float] | None = None,
) -> np.ndarray:
    """BGR uint8 crops (N, S, S, 3) to a normalised RGB float32 tensor (N, 3, S, S).

    ``mean`` and ``std`` are per RGB channel on the 0-255 scale. ``low_light``
    ``(below, to)`` brightens dark crops first (:func:`brighten_dark`); a model
    records whether it was trained so (``low_light`` in its metadata).
    """
    crops = np.asarray(crops)
    if crops.ndim == 3:
        crops = crops[None]
    if low_light:
        crops = brighten_dark(crops, *low_light)
    rgb = crops[..., ::-1].astype(np.float32)
    rgb -= np.asarray(mean, np.float32)
    rgb /= np.asarray(std, np.float32)
    return np.ascontiguousarray(rgb.transpose(0, 3, 1, 2))


def lower_face_colours(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Mean colour of the lower half of each face (nose to chin), in CIE Lab.

    The part of a face a mask covers changes colour when the mask goes on, off or
    below the nose, while small moves of the box or of the head hardly change its
    mean. It costs a few microseconds per face, against milliseconds for a
    classification, so the live engine uses it to notice that a tracked face has
    changed (see :func:`colour_change`).

    Args:
        image: (H, W, 3) BGR uint8.
        boxes: (N, 4) xyxy pixel boxes.

    Returns:
        (N, 3) float32 OpenCV 8-bit Lab (L, a, b on 0-255, a and b centred on 128);
        NaN rows for boxes with no pixels inside the image.
    """
    h, w = image.shape[:2]
    out = np.full((len(boxes), 3), np.nan, np.float32)
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, np.float32).reshape(-1, 4)):
        ym = (float(y1) + float(y2)) / 2
        x1, x2 = max(int(round(float(x1))), 0), min(int(round(float(x2))), w)
        y1, y2 = max(int(round(ym)), 0), min(int(round(float(y2))), h)
        if x2 - x1 < 1 or y2 - y1 < 1:
            continue
        small = cv2.resize(image[y1:y2, x1:x2], (8, 4), interpolation=cv2.INTER_AREA)
        out[i] = cv2.cvtColor(small, cv2.COLOR_BGR2LAB).reshape(-1, 3).astype(np.float32).mean(0)
    return out


def colour_change(a: np.ndarray, b: np.ndarray) -> float:
    """How far apart two :func:`lower_face_colours` rows are.

    The chroma (a, b) distance plus half the lightness difference, so that a change
    of light alone counts for less than a change of material. Measured: the same face
    up to 10 frames apart in the shared clip, median 0.8 and 90th percentile 5; the
    same LFW photo without and with a synthetic mask, median 31 (93% over 15); with
    the mask proper and below the nose, median 21 (69% over 15). NaN rows (no pixels)
    give 0.
    """
    d = np.asarray(a, np.float32) - np.asarray(b, np.float32)
    value = float(np.hypot(d[1], d[2]) + 0.5 * abs(d[0]))
    return 0.0 if np.isnan(value) else value
