"""The few data types that flow through maskwatch.

A :class:`Faces` value keeps one array per field (structure of arrays, like
``supervision.Detections``), so a whole frame's faces are filtered, sorted and
serialised with numpy rather than Python loops. Fields that a stage has not filled
yet are empty arrays of the right shape, never ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

#: Mask states, in the order of the classifier's outputs.
MASK_CLASSES: tuple[str, ...] = ("with_mask", "without_mask", "mask_incorrect")

#: The mask state shown for a face too dark, too blurred or too small for the
#: classifier to be trusted (:class:`~maskwatch.ops.quality.QualityRule`): "cannot judge".
#: Not a class of the model: such a face keeps its ``mask_probs``, and is left out of
#: compliance figures and counted apart.
UNKNOWN_MASK = "unknown"
#: Every mask state a face or an event can be shown with: the classes, then ``UNKNOWN_MASK``.
SHOWN_MASK_STATES: tuple[str, ...] = (*MASK_CLASSES, UNKNOWN_MASK)

#: Human-readable labels for the mask states.
MASK_LABELS: dict[str, str] = {
    "with_mask": "mask",
    "without_mask": "no mask",
    "mask_incorrect": "mask below nose",
    UNKNOWN_MASK: "cannot judge",
}


@dataclass(frozen=True)
class Faces:
    """Faces found in one image, one array per field.

    Attributes:
        boxes: (N, 4) float32, ``x1, y1, x2, y2`` in pixels of the analysed image.
        scores: (N,) float32 detector confidence in [0, 1].
        landmarks: (N, 5, 2) float32 pixel coordinates in YuNet/ArcFace order: eye on
            the image's left, eye on the image's right, nose tip, mouth corner on the
            image's left, mouth corner on the image's right. (N, 0, 2) when the
            detector gives none (the res10 SSD).
        mask_probs: (N, C) float32 probabilities over ``MASK_CLASSES``, or (0, C)/(N, 0)
            when not classified yet.
        track_ids: (N,) int64, -1 when not tracked.
        mask_labels: (N,) object, the mask state shown for each face (a name from
            ``MASK_CLASSES``, or ``UNKNOWN_MASK`` for a face shown as cannot judge: the
            quality rule, or a contested track) or None when not classified. Unless
            given, the most probable class of ``mask_probs``; the tracker gives the
            stable label of the face's track.
            Replacing ``mask_probs`` (:meth:`with_fields`) derives them again unless
            ``mask_labels`` is replaced too.
        names: (N,) object, the recognised person's name, or None (unknown, or not looked up).
        similarities: (N,) float32, similarity of the best gallery match (cosine), NaN when
            the face was not looked up.

    Example:
        >>> faces = Faces(boxes=[[10, 10, 50, 60]], scores=[0.9])
        >>> len(faces), faces.widths.tolist()
        (1, [40.0])
        >>> len(faces[faces.scores > 0.95])
        0
    """

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 5, 2), np.float32))
    mask_probs: np.ndarray = field(
        default_factory=lambda: np.zeros((0, len(MASK_CLASSES)), np.float32))
    track_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    mask_labels: np.ndarray | None = None
    names: np.ndarray | None = None
    similarities: np.ndarray | None = None

    def __post_init__(self) -> None:
        for f in fields(self):  # None means "not filled": an empty array of the right shape
            if getattr(self, f.name) is None and f.name not in _PER_FACE:
                object.__setattr__(self, f.name, f.default_factory())  # type: ignore[misc]
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        n = len(boxes)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if len(scores) == 0 and n:
            scores = np.ones(n, np.float32)
        landmarks = np.asarray(self.landmarks, dtype=np.float32)
        if landmarks.size == 0:
            landmarks = np.zeros((n, 0, 2), np.float32) if n else np.zeros((0, 5, 2), np.float32)
        mask_probs = np.asarray(self.mask_probs, dtype=np.float32)
        if mask_probs.size == 0:
            mask_probs = np.zeros((0, len(MASK_CLASSES)), np.float32)
        track_ids = np.asarray(self.track_ids, dtype=np.int64).reshape(-1)
        if len(track_ids) == 0 and n:
            track_ids = np.full(n, -1, np.int64)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "landmarks", landmarks)
        object.__setattr__(self, "mask_probs", mask_probs)
        object.__setattr__(self, "track_ids", track_ids)
        if len(scores) != n:
            raise ValueError(f"Faces: {n} boxes but {len(scores)} scores")
        if landmarks.ndim != 3 or landmarks.shape[2] != 2 or (landmarks.shape[0] != n):
            raise ValueError(f"Faces: landmarks must be (N, K, 2) with N={n}, "
                             f"got {landmarks.shape}")
        if len(mask_probs) not in (0, n) or mask_probs.ndim != 2:
            raise ValueError(f"Faces: mask_probs must be (N, C) with N={n}, got {mask_probs.shape}")
        if len(track_ids) != n:
            raise ValueError(f"Faces: {n} boxes but {len(track_ids)} track ids")
        # The per-face results; arrays already of the right kind (what the pipeline
        # passes on from one stage to the next) are kept as they are.
        if self.mask_labels is None:
            labels = (_CLASS_NAMES[mask_probs.argmax(axis=1)] if len(mask_probs) == n and n
                      else np.full(n, None, object))
        else:
            labels = _objects(self.mask_labels)
            if not _KNOWN_LABELS.issuperset(labels.tolist()):
                raise ValueError("Faces: mask_labels must be None or one of "
                                 f"{', '.join(SHOWN_MASK_STATES)}")
        names = np.full(n, None, object) if self.names is None else _objects(self.names)
        sims = self.similarities
        if sims is None:
            sims = np.full(n, np.nan, np.float32)
        elif not (isinstance(sims, np.ndarray) and sims.dtype == np.float32 and sims.ndim == 1):
            sims = np.array([np.nan if v is None else v for v in sims], np.float32).reshape(-1)
        for name, values in (("mask_labels", labels), ("names", names), ("similarities", sims)):
            if len(values) != n:
                raise ValueError(f"Faces: {n} boxes but {len(values)} {name}")
        object.__setattr__(self, "mask_labels", labels)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "similarities", sims)

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: Any) -> Faces:
        """Select faces with a boolean mask, an index array or a slice."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Faces(
            boxes=self.boxes[index],
            scores=self.scores[index],
            landmarks=self.landmarks[index],
            mask_probs=self.mask_probs[index] if self.has_mask_probs else None,
            track_ids=self.track_ids[index],
            mask_labels=self.mask_labels[index],
            names=self.names[index],
            similarities=self.similarities[index],
        )

    @property
    def has_landmarks(self) -> bool:
        return self.landmarks.shape[1] == 5

    @property
    def has_mask_probs(self) -> bool:
        return len(self) > 0 and len(self.mask_probs) == len(self)

    @property
    def widths(self) -> np.ndarray:
        return self.boxes[:, 2] - self.boxes[:, 0]

    @property
    def heights(self) -> np.ndarray:
        return self.boxes[:, 3] - self.boxes[:, 1]

    @property
    def sizes(self) -> np.ndarray:
        """Shorter side of each box in pixels, the face size used for reports."""
        return np.minimum(self.widths, self.heights)

    def with_fields(self, **changes: Any) -> Faces:
        """A copy with some fields replaced, validated again; new ``mask_probs`` without
        new ``mask_labels`` give the labels of the new probabilities."""
        if "mask_probs" in changes and "mask_labels" not in changes:
            changes["mask_labels"] = None
        return replace(self, **changes)

    @staticmethod
    def concatenate(items: list[Faces]) -> Faces:
        """Join several ``Faces`` values (for example from image tiles) into one."""
        items = [f for f in items if len(f)]
        if not items:
            return Faces()
        kw: dict[str, np.ndarray | None] = {}
        for f in fields(Faces):
            arrays = [getattr(x, f.name) for x in items]
            if f.name == "mask_probs" and not all(x.has_mask_probs for x in items):
                kw[f.name] = None
            elif f.name in _PER_FACE:
                kw[f.name] = np.concatenate(arrays)
            elif f.name == "landmarks" and len({a.shape[1] for a in arrays}) > 1:
                kw[f.name] = None
            else:
                kw[f.name] = np.concatenate(arrays)
        return Faces(**kw)

    def to_list(self) -> list[dict[str, Any]]:
        """JSON-ready list of dicts, one per face (used at the edges: CLI, web)."""
        out = []
        for i in range(len(self)):
            item: dict[str, Any] = {
                "box": [round(float(v), 1) for v in self.boxes[i]],
                "score": round(float(self.scores[i]), 4),
            }
            if self.has_landmarks:
                item["landmarks"] = [[round(float(x), 1), round(float(y), 1)]
                                     for x, y in self.landmarks[i]]
            if self.mask_labels[i] is not None:
                item["mask"] = self.mask_labels[i]
            if self.has_mask_probs:
                item["mask_probs"] = {
                    c: round(float(p), 4)
                    for c, p in zip(MASK_CLASSES, self.mask_probs[i], strict=True)
                }
            if self.track_ids[i] >= 0:
                item["track_id"] = int(self.track_ids[i])
            if self.names[i] is not None:
                item["identity"] = self.names[i]
            if not np.isnan(self.similarities[i]):
                item["similarity"] = round(float(self.similarities[i]), 4)
            out.append(item)
        return out


#: The per-face results that default to None per face (not an empty array).
_PER_FACE = ("mask_labels", "names", "similarities")


_CLASS_NAMES = np.array(MASK_CLASSES, object)
_KNOWN_LABELS = frozenset((*SHOWN_MASK_STATES, None))


def _objects(values: Any) -> np.ndarray:
    """A 1-d object array of ``values`` (numpy would make a 2-d array of equal strings)."""
    if isinstance(values, np.ndarray) and values.dtype == object and values.ndim == 1:
        return values
    values = list(values)
    out = np.empty(len(values), object)
    out[:] = values
    return out
