"""Mask-state classifier: an ONNX model trained by ``maskwatch train``.

The model file describes itself: its ``maskwatch`` metadata entry (JSON) holds the
class names, input size, crop margin, normalisation, backbone, data summary and test
metrics. They are read back here instead of being guessed, so a model trained with
other settings runs correctly without code changes.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.models._ort import cpu_session
from maskwatch.ops.crop import IMAGENET_MEAN, IMAGENET_STD, crops_to_tensor, face_crops
from maskwatch.types import MASK_CLASSES, Faces

METADATA_KEY = "maskwatch"
FORMAT_VERSION = 1


def default_model_path() -> Path:
    """The mask classifier shipped inside the package."""
    return Path(__file__).resolve().parents[1] / "weights" / "mask_classifier.onnx"


@dataclass
class ModelInfo:
    """What a mask-classifier ONNX file says about itself.

    Attributes:
        class_names: output order of the logits.
        input_size: side of the square input crop, pixels.
        margin: crop context on each side, fraction of the box's longer side.
        mean, std: per RGB channel normalisation on the 0-255 scale.
        low_light: ``[below, to]``: crops darker than mean luma ``below`` are
            gamma-brightened to ``to`` before the model (see
            :func:`maskwatch.ops.crop.brighten_dark`); empty: not done (models made
            before it).
        backbone, head: architecture names.
        data, metrics, training: free-form summaries of the run that made it.
    """

    class_names: list[str] = field(default_factory=lambda: list(MASK_CLASSES))
    input_size: int = 128
    margin: float = 0.15
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    low_light: list[float] = field(default_factory=list)
    backbone: str = ""
    head: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    format: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelInfo:
        raw = json.loads(text)
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        info = cls(**known)
        if info.format > FORMAT_VERSION:
            raise ValueError(f"model metadata format {info.format} is newer than this maskwatch "
                             "understands")
        if len(info.mean) != 3 or len(info.std) != 3 or info.input_size < 8 or not info.class_names:
            raise ValueError("model metadata is incomplete (class_names, input_size, mean, std)")
        if info.low_light and len(info.low_light) != 2:
            raise ValueError("model metadata: low_light must be [below, to]")
        return info


class MaskClassifier:
    """Classify each face's mask state with onnxruntime.

    Args:
        model_path: ONNX file written by ``maskwatch train``; default: the shipped one.
        threads: onnxruntime intra-op threads (None: onnxruntime's choice).
        batch_size: most faces per forward pass.

    Example:
        >>> clf = MaskClassifier()                            # doctest: +SKIP
        >>> faces = clf.classify(image, detector.detect(image))  # doctest: +SKIP
        >>> faces.mask_labels                                 # doctest: +SKIP
        ['with_mask', 'without_mask']
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        threads: int | None = None,
        batch_size: int = 32,
    ) -> None:
        self.model_path = Path(model_path) if model_path else default_model_path()
        if not self.model_path.is_file():
            raise FileNotFoundError(f"mask classifier model not found: {self.model_path}")
        self._session = cpu_session(str(self.model_path), threads)
        meta = self._session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in meta:
            raise ValueError(f"{self.model_path} has no '{METADATA_KEY}' metadata: "
                             "not a maskwatch model")
        self.info = ModelInfo.from_json(meta[METADATA_KEY])
        self._input = self._session.get_inputs()[0].name
        self.batch_size = int(batch_size)
        # Map the model's classes onto MASK_CLASSES so Faces.mask_probs has one meaning.
        self._order = [self.info.class_names.index(c) if c in self.info.class_names else -1
                       for c in MASK_CLASSES]

    @property
    def low_light(self) -> tuple[float, float] | None:
        """``(below, to)`` of the model's dark-crop brightening, or None."""
        return (float(self.info.low_light[0]), float(self.info.low_light[1])) \
            if self.info.low_light else None

    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)

    def predict_crops(self, crops: np.ndarray) -> np.ndarray:
        """Probabilities (N, C) in the model's class order for BGR uint8 crops (N, S, S, 3).

        The crops must already be cut with :func:`maskwatch.ops.crop.face_crops` using
        this model's ``input_size`` and ``margin``.
        """
        if len(crops) == 0:
            return np.zeros((0, len(self.info.class_names)), np.float32)
        out = []
        for i in range(0, len(crops), self.batch_size):
            x = crops_to_tensor(crops[i : i + self.batch_size], tuple(self.info.mean),
                                tuple(self.info.std), self.low_light)
            logits = self._session.run(None, {self._input: x})[0]
            out.append(_softmax(logits))
        return np.concatenate(out).astype(np.float32)

    def crops(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        """The model's input crops for ``faces`` in a BGR uint8 image."""
        return face_crops(image, faces.boxes, self.info.input_size, self.info.margin)

    def classify(self, image: np.ndarray, faces: Faces,
                 crops: np.ndarray | None = None) -> Faces:
        """Return ``faces`` with ``mask_probs`` over :data:`~maskwatch.types.MASK_CLASSES`.

        ``crops``: the faces' crops when the caller has cut them already
        (:meth:`crops`), so that they are not cut twice.
        """
        probs = self.predict_crops(self.crops(image, faces) if crops is None else crops)
        mapped = np.zeros((len(faces), len(MASK_CLASSES)), np.float32)
        for j, k in enumerate(self._order):
            if k >= 0:
                mapped[:, j] = probs[:, k]
        return faces.with_fields(mask_probs=mapped)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def read_model_info(model_path: str | os.PathLike[str]) -> ModelInfo:
    """Read a model file's maskwatch metadata without starting a session."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return ModelInfo.from_json(prop.value)
    raise ValueError(f"{model_path} has no '{METADATA_KEY}' metadata")
