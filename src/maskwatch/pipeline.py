"""The analysis engine: detection, mask state, tracking and identity, per frame.

:class:`Pipeline` is the only place that knows the order of the stages and when the
expensive ones run. With tracking on (the default for video), each face keeps a track
id; its mask state is classified when the track appears and every
``classify_every`` frames after, smoothed over the track so labels do not flicker,
and its identity is looked up when the track appears, then every ``identify_every``
frames once named (every ``identify_unknown_every`` while unknown). Without tracking (single photos), every stage runs on every face.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from maskwatch.models.detector import create_detector
from maskwatch.models.mask_classifier import MaskClassifier
from maskwatch.ops.crop import lower_face_colours
from maskwatch.tracking import FaceTracker, Track
from maskwatch.types import MASK_CLASSES, Faces


class Embedder(Protocol):
    """Turns faces into identity embeddings (the recognition issue supplies one)."""

    name: str

    def embed(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        """(N, D) float32 embeddings of ``faces`` in a BGR uint8 image."""
        ...


class Matcher(Protocol):
    """Finds who an embedding belongs to (a gallery search)."""

    def identify(self, embeddings: np.ndarray, masked: np.ndarray) -> list[tuple[str | None, float]]:
        """``(name or None, similarity)`` per embedding; ``masked`` (N,) bool selects the
        masked-face templates and threshold."""
        ...


@dataclass
class PipelineConfig:
    """Engine settings; keys equal constructor arguments of the parts they set.

    Attributes:
        detector: ``yunet`` (default) or ``ssd`` (OpenCV's res10 SSD).
        min_score: detector confidence threshold, 0-1 (YuNet; the SSD uses 0.5).
        max_side: longest side given to YuNet, pixels; larger frames are shrunk.
        upscale: enlarge small frames by this factor before detection (accurate mode).
        track: keep track ids and run the expensive stages only when needed.
        detect_every: with tracking, frames between detections over the whole frame;
            in between, the detector looks only around the tracked faces (a region
            ``region_scale`` times the face, scaled to ``region_size`` px, where a face
            that continues a track needs only ``track_score``), which costs a fraction
            of a full pass. New faces are found within this many frames. 1 = the whole
            frame every frame.
        region_size, region_scale, track_score: see ``detect_every``.
        classify_every: most frames between mask classifications of a tracked face.
        reclassify_change: a settled face is classified again at once (at most every
            3 frames) when the mean colour of its lower half has moved by more than
            this since its last classification (:func:`~maskwatch.ops.crop.colour_change`:
            chroma distance plus half the lightness change, 8-bit Lab): a mask went on,
            off or down. 0 turns it off.
        identify_every: frames between identity look-ups of a tracked face.
        identify_unknown_every: frames between look-ups of a tracked face that is still
            unknown: a face first seen turning, blurred or half in the frame gets more
            chances (a face nobody enrolled costs one embedding every this many frames).
        model: mask classifier ONNX file (None: the shipped one).
        threads: onnxruntime threads for the classifier (None: its default).
        max_missed, iou_threshold, ema, switch_frames, switch_confidence, hold_frames,
        settle_looks, settle_confidence:
            tracker settings (see :class:`~maskwatch.tracking.FaceTracker`).
    """

    detector: str = "yunet"
    min_score: float = 0.6
    max_side: int = 640
    upscale: float = 1.0
    track: bool = True
    detect_every: int = 5
    region_size: int = 160
    region_scale: float = 2.5
    track_score: float = 0.3
    classify_every: int = 10
    reclassify_change: float = 15.0
    identify_every: int = 30
    identify_unknown_every: int = 10
    model: str | None = None
    threads: int | None = None
    max_missed: int = 15
    iou_threshold: float = 0.3
    ema: float = 0.5
    switch_frames: int = 2
    switch_confidence: float | None = 0.5
    hold_frames: int = 2
    settle_looks: int = 3
    settle_confidence: float = 0.7

    def make_detector(self) -> Any:
        """The detector these settings describe (to share one between pipelines)."""
        kwargs: dict[str, Any] = (
            {"score_threshold": self.min_score, "max_side": self.max_side, "upscale": self.upscale}
            if self.detector == "yunet" else {}
        )
        return create_detector(self.detector, **kwargs)

    def make_tracker(self) -> FaceTracker:
        """A new tracker with these settings."""
        return FaceTracker(
            iou_threshold=self.iou_threshold, max_missed=self.max_missed, ema=self.ema,
            switch_frames=self.switch_frames, switch_confidence=self.switch_confidence,
            hold_frames=self.hold_frames, settle_looks=self.settle_looks, settle_confidence=self.settle_confidence,
        )

    @classmethod
    def accurate(cls, **overrides: Any) -> PipelineConfig:
        """Photo mode: every stage on every face, small faces found by upscaling."""
        base = {"track": False, "max_side": 2048, "upscale": 2.0, "min_score": 0.6}
        base.update(overrides)
        return cls(**base)


@dataclass
class FrameResult:
    """What the engine found in one frame.

    Attributes:
        faces: boxes, landmarks, scores, (smoothed) mask probabilities, track ids.
        mask_labels: the mask state shown for each face (the stable label of its track
            when tracking, else the classifier's argmax); None when not classified.
        names: identity per face, None when unknown or not looked up.
        similarities: best gallery similarity per face, None when not looked up.
        timings_ms: milliseconds per stage (detect, track, classify, embed, total).
        ended: tracks that ended at this frame (for events).
    """

    faces: Faces
    mask_labels: list[str | None]
    names: list[str | None]
    similarities: list[float | None]
    timings_ms: dict[str, float]
    frame_index: int
    timestamp: float
    width: int
    height: int
    ended: list[Track] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, the schema of ``maskwatch analyze --json`` (see README)."""
        faces = self.faces.to_list()
        for i, item in enumerate(faces):
            if self.mask_labels[i] is not None:
                item["mask"] = self.mask_labels[i]
            else:
                item.pop("mask", None)
            if self.names[i] is not None:
                item["identity"] = self.names[i]
            if self.similarities[i] is not None:
                item["similarity"] = round(float(self.similarities[i]), 4)
        return {
            "frame": self.frame_index,
            "timestamp": round(self.timestamp, 3),
            "width": self.width,
            "height": self.height,
            "faces": faces,
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
        }


class Pipeline:
    """Detect, classify, track and identify faces in frames.

    Args:
        config: settings; see :class:`PipelineConfig`.
        detector, classifier: ready-made parts (built from ``config`` when None).
        embedder, matcher: optional recognition parts; names are looked up only when
            both are given.

    Example:
        >>> engine = Pipeline(PipelineConfig())            # doctest: +SKIP
        >>> result = engine.process(frame)                  # doctest: +SKIP
        >>> result.mask_labels, result.timings_ms["total"]  # doctest: +SKIP
    """

    def __init__(
        self,
        config: PipelineConfig | None = None,
        *,
        detector: Any = None,
        classifier: MaskClassifier | None = None,
        embedder: Embedder | None = None,
        matcher: Matcher | None = None,
    ) -> None:
        self.config = config or PipelineConfig()
        c = self.config
        self.detector = detector if detector is not None else c.make_detector()
        self.classifier = classifier or MaskClassifier(c.model, threads=c.threads)
        self.embedder = embedder
        self.matcher = matcher
        self.tracker = self._new_tracker()
        self._frame = -1
        self._last_full = -(10**9)

    def _new_tracker(self) -> FaceTracker:
        return self.config.make_tracker()

    def reset(self) -> list[Track]:
        """Forget all tracks (a new video); returns the tracks that were live."""
        ended = self.tracker.end_all()
        self.tracker = self._new_tracker()
        self._frame = -1
        self._last_full = -(10**9)
        return ended

    def process(self, image: np.ndarray, frame_index: int | None = None, timestamp: float | None = None) -> FrameResult:
        """Analyse one BGR uint8 frame.

        Args:
            image: (H, W, 3) BGR uint8.
            frame_index: position in the stream (default: one more than the last call).
            timestamp: seconds (default: time.monotonic()).
        """
        t_start = time.perf_counter()
        self._frame = self._frame + 1 if frame_index is None else int(frame_index)
        ts = time.monotonic() if timestamp is None else float(timestamp)
        timings: dict[str, float] = {}

        t0 = time.perf_counter()
        faces = self._detect(image)
        timings["detect"] = (time.perf_counter() - t0) * 1e3

        if self.config.track:
            faces, labels, names, sims, ended = self._tracked(image, faces, ts, timings)
        else:
            faces, labels, names, sims = self._untracked(image, faces, timings)
            ended = []
        timings["total"] = (time.perf_counter() - t_start) * 1e3
        return FrameResult(
            faces=faces, mask_labels=labels, names=names, similarities=sims, timings_ms=timings,
            frame_index=self._frame, timestamp=ts, width=int(image.shape[1]), height=int(image.shape[0]),
            ended=ended,
        )

    def forget_identities(self) -> None:
        """Look every tracked face up in the gallery again on the next frame (call it
        after people were added, renamed or removed)."""
        self.tracker.forget_identities()

    def finish(self) -> list[Track]:
        """End every live track (end of a source) and return them."""
        return self.tracker.end_all()

    # -- stages -----------------------------------------------------------------

    def _detect(self, image: np.ndarray) -> Faces:
        """The whole frame, or only the regions around live tracks between full passes."""
        c = self.config
        boxes = self._expected_boxes(image) if c.track and c.detect_every > 1 else None
        if boxes is None:
            self._last_full = self._frame
            return self.detector.detect(image)
        return self.detector.detect_around(image, boxes, scale=c.region_scale, size=c.region_size,
                                           track_score=c.track_score)

    def _expected_boxes(self, image: np.ndarray) -> np.ndarray | None:
        """Predicted boxes of the tracks seen last frame, or None when the whole frame
        should be searched: a full pass is due, no track was seen, the detector cannot
        search regions, or the regions would cost half as much as the frame."""
        c = self.config
        if self._frame - self._last_full >= c.detect_every or not hasattr(self.detector, "detect_around"):
            return None
        tracks = [t for t in self.tracker.live.values() if t.missed == 0]
        if not tracks:
            return None
        h, w = image.shape[:2]
        full_pixels = min(1.0, c.max_side / max(h, w)) ** 2 * h * w if c.max_side > 0 else h * w
        if len(tracks) * c.region_size ** 2 > 0.5 * full_pixels:
            return None
        return np.stack([t.predicted_box(self._frame) for t in tracks])

    def _untracked(self, image: np.ndarray, faces: Faces, timings: dict[str, float]) -> tuple[Any, ...]:
        t0 = time.perf_counter()
        faces = self.classifier.classify(image, faces)
        timings["classify"] = (time.perf_counter() - t0) * 1e3
        labels: list[str | None] = list(faces.mask_classes) if len(faces) else []
        names: list[str | None] = [None] * len(faces)
        sims: list[float | None] = [None] * len(faces)
        if self._can_identify() and len(faces):
            t0 = time.perf_counter()
            masked = np.array([lab != "without_mask" for lab in labels], bool)
            for i, (name, sim) in enumerate(self._identify(image, faces, masked)):
                names[i], sims[i] = name, sim
            timings["embed"] = (time.perf_counter() - t0) * 1e3
        return faces, labels, names, sims

    def _tracked(self, image: np.ndarray, faces: Faces, ts: float, timings: dict[str, float]) -> tuple[Any, ...]:
        c = self.config
        t0 = time.perf_counter()
        faces = self.tracker.update(faces, self._frame, ts)
        timings["track"] = (time.perf_counter() - t0) * 1e3

        t0 = time.perf_counter()
        looks = lower_face_colours(image, faces.boxes) if c.reclassify_change > 0 else None
        due = self.tracker.due(faces, self._frame, c.classify_every, looks, c.reclassify_change)
        if due.any():
            sub = faces[due]
            probs = self.classifier.classify(image, sub).mask_probs
            for k, tid, p in zip(np.flatnonzero(due), sub.track_ids, probs, strict=True):
                self.tracker.update_mask(int(tid), p, self._frame, None if looks is None else looks[k])
        faces = self.tracker.mask_probs_for(faces)
        labels = self.tracker.stable_labels(faces)
        timings["classify"] = (time.perf_counter() - t0) * 1e3

        if self._can_identify() and len(faces):
            t0 = time.perf_counter()
            live = self.tracker.live
            need = np.array([self._identity_due(live[int(t)]) for t in faces.track_ids], bool)
            if need.any():
                sub = faces[need]
                masked = np.array([labels[i] not in (None, "without_mask") for i in np.flatnonzero(need)], bool)
                for tid, (name, sim) in zip(sub.track_ids, self._identify(image, sub, masked), strict=True):
                    self.tracker.set_identity(int(tid), name, sim, self._frame)
            timings["embed"] = (time.perf_counter() - t0) * 1e3
        live = self.tracker.live
        names = [live[int(t)].identity if int(t) in live else None for t in faces.track_ids]
        sims = [live[int(t)].best_similarity if int(t) in live else None for t in faces.track_ids]
        return faces, labels, names, sims, self.tracker.pop_ended()

    def _identity_due(self, track: Any) -> bool:
        if track.last_identified < 0:
            return True
        every = self.config.identify_every if track.identity is not None else self.config.identify_unknown_every
        return track.last_identified <= self._frame - every

    def _can_identify(self) -> bool:
        return self.embedder is not None and self.matcher is not None

    def _identify(self, image: np.ndarray, faces: Faces, masked: np.ndarray) -> list[tuple[str | None, float]]:
        assert self.embedder is not None and self.matcher is not None
        if getattr(self.embedder, "mask_aware", False):
            # A masked face goes to the student, whose embedding lands where SFace puts the
            # face unmasked: it is matched against the plain templates.
            embeddings = self.embedder.embed(image, faces, masked=masked)  # type: ignore[call-arg]
            return self.matcher.identify(embeddings, masked, masked_templates=False)  # type: ignore[call-arg]
        return self.matcher.identify(self.embedder.embed(image, faces), masked)


def mask_summary(labels: list[str | None]) -> dict[str, int]:
    """Counts of each mask state in a list of labels (None ignored)."""
    out = dict.fromkeys(MASK_CLASSES, 0)
    for lab in labels:
        if lab in out:
            out[lab] += 1
    return out
