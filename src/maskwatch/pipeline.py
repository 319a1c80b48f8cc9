"""The analysis engine: detection, mask state, tracking and identity, per frame.

:class:`Pipeline` is the only place that knows the order of the stages. With tracking
on (the default for video), each face keeps a track id, and the tracker
(:class:`~maskwatch.tracking.FaceTracker`) says which faces the expensive stages run
on: its mask state is classified when the track appears and every ``classify_every``
frames after, smoothed over the track so labels do not flicker, and its identity is
looked up when the track appears, then every
:data:`~maskwatch.tracking.identity.IDENTIFY_EVERY` frames once named (every
:data:`~maskwatch.tracking.identity.IDENTIFY_UNKNOWN_EVERY` while unknown). Without
tracking (single photos), every stage runs on every face.

A face too dark, too blurred or too small for the classifier to be trusted (the
:class:`~maskwatch.ops.quality.QualityRule` of ``PipelineConfig.quality``) is shown as
:data:`~maskwatch.types.UNKNOWN_MASK`. Without tracking it is still classified (its
``mask_probs`` are kept); with tracking, a frame on which it fails the rule is not
classified and leaves its track's smoothed state as it is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from maskwatch.models.detector import create_detector
from maskwatch.models.mask_classifier import MaskClassifier
from maskwatch.ops.crop import lower_face_colours
from maskwatch.ops.quality import DEFAULT_RULE, QualityRule, face_quality
from maskwatch.tracking import FaceTracker, Track, TrackerConfig
from maskwatch.types import SHOWN_MASK_STATES, UNKNOWN_MASK, Faces

# Between full-frame detections the detector looks only around the faces tracked (see
# PipelineConfig.detect_every). A full YuNet pass over a 640x480 frame costs 12-20 ms;
# a region scaled to REGION_SIZE px about a tenth of that. Nobody ever set other values.
#: Side in pixels of the square region around a tracked face given to the detector.
REGION_SIZE = 160
#: Region side over the face box's longer side: room for the face to move between
#: two full passes and for the context YuNet needs around a face.
REGION_SCALE = 2.5
#: Least detector score of a find in a region that overlaps the face it was looked for.
#: YuNet scores a face lower in a region (less context) than in the whole frame; as in
#: ByteTrack a low score may continue a track, never open one (new faces still need
#: ``min_score``). With it the regions found 747 faces on the shared clip, the full
#: pass on every frame 748.
REGION_TRACK_SCORE = 0.3


class Embedder(Protocol):
    """Turns faces into identity embeddings (the recognition issue supplies one)."""

    name: str

    def embed(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        """(N, D) float32 embeddings of ``faces`` in a BGR uint8 image."""
        ...


class Matcher(Protocol):
    """Finds who an embedding belongs to (a gallery search)."""

    def identify(self, embeddings: np.ndarray,
                 masked: np.ndarray) -> list[tuple[str | None, float]]:
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
            ``REGION_SCALE`` times the face, scaled to ``REGION_SIZE`` px, where a face
            that continues a track needs only ``REGION_TRACK_SCORE``), which costs a
            fraction of a full pass. New faces are found within this many frames.
            1 = the whole frame every frame.
        classify_every: most frames between mask classifications of a tracked face.
        reclassify_change: a settled face is classified again at once (at most every
            3 frames) when the mean colour of its lower half has moved by more than
            this since its last classification (:func:`~maskwatch.ops.crop.colour_change`:
            chroma distance plus half the lightness change, 8-bit Lab): a mask went on,
            off or down. 0 turns it off.
        model: mask classifier ONNX file (None: the shipped one).
        threads: onnxruntime threads for the classifier (None: its default).
        tracker: box matching and mask smoothing settings
            (:class:`~maskwatch.tracking.TrackerConfig`).
        quality: which faces are judged at all
            (:class:`~maskwatch.ops.quality.QualityRule`; default
            :data:`~maskwatch.ops.quality.DEFAULT_RULE`, mean luma 8); the others are
            shown as :data:`~maskwatch.types.UNKNOWN_MASK`. ``QualityRule()`` turns it off.

    Identity look-ups of tracked faces follow fixed intervals
    (:data:`~maskwatch.tracking.identity.IDENTIFY_EVERY`,
    :data:`~maskwatch.tracking.identity.IDENTIFY_UNKNOWN_EVERY`).
    """

    detector: str = "yunet"
    min_score: float = 0.6
    max_side: int = 640
    upscale: float = 1.0
    track: bool = True
    detect_every: int = 5
    classify_every: int = 10
    reclassify_change: float = 15.0
    model: str | None = None
    threads: int | None = None
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    quality: QualityRule = DEFAULT_RULE

    def make_detector(self) -> Any:
        """The detector these settings describe (to share one between pipelines)."""
        kwargs: dict[str, Any] = (
            {"score_threshold": self.min_score, "max_side": self.max_side, "upscale": self.upscale}
            if self.detector == "yunet" else {}
        )
        return create_detector(self.detector, **kwargs)

    def make_tracker(self) -> FaceTracker:
        """A new tracker with these settings (``tracker``)."""
        return FaceTracker(self.tracker)

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
        faces: one entry per face: box, landmarks, score, (smoothed) mask probabilities,
            the mask label shown, track id, name and similarity (see :class:`Faces`).
        timings_ms: milliseconds per stage (detect, quality, track, classify, embed,
            total); ``quality`` only when a quality rule is on.
        frame_index: position in the source.
        timestamp: seconds (a file: from its first frame; live: the monotonic clock).
        width, height: of the analysed frame, pixels.
        ended: tracks that ended at this frame (for events).
        source: where the frame came from (a path, ``camera:N``, a masked URL), when
            read by :meth:`maskwatch.Engine.run`.
        name: the photo's name within a folder (None otherwise).
        image: the analysed frame (BGR), when read by :meth:`maskwatch.Engine.run`.
        read_at: Unix seconds at which :meth:`maskwatch.Engine.run` took the frame from
            its source (for end-to-end latency; not in :meth:`to_dict`).
    """

    faces: Faces
    timings_ms: dict[str, float]
    frame_index: int
    timestamp: float
    width: int
    height: int
    ended: list[Track] = field(default_factory=list)
    source: str | None = None
    name: str | None = None
    image: np.ndarray | None = field(default=None, repr=False)
    read_at: float | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, the schema of ``maskwatch analyze --json`` (see README)."""
        out: dict[str, Any] = {
            "frame": self.frame_index,
            "timestamp": round(self.timestamp, 3),
            "width": self.width,
            "height": self.height,
            "faces": self.faces.to_list(),
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
        }
        if self.source is not None:
            out["source"] = self.source
        if self.name:
            out["name"] = self.name
        return out


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
        >>> result.faces.mask_labels, result.timings_ms["total"]  # doctest: +SKIP
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

    def process(self, image: np.ndarray, frame_index: int | None = None,
                timestamp: float | None = None) -> FrameResult:
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

        # With a quality rule, every face's classifier crop is cut here once, measured, and
        # handed on to the classification (of every face, or of the tracks due).
        judgeable = crops = None
        if self.config.quality.active and len(faces):
            t0 = time.perf_counter()
            clf = self.classifier
            crops = clf.crops(image, faces)
            judgeable = self.config.quality.judge(
                face_quality(crops, faces.sizes, clf.info.margin))
            timings["quality"] = (time.perf_counter() - t0) * 1e3

        if self.config.track:
            faces, ended = self._tracked(image, faces, ts, timings, judgeable, crops)
        else:
            faces, ended = self._untracked(image, faces, timings, judgeable, crops), []
        timings["total"] = (time.perf_counter() - t_start) * 1e3
        return FrameResult(faces=faces, timings_ms=timings, frame_index=self._frame, timestamp=ts,
                           width=int(image.shape[1]), height=int(image.shape[0]), ended=ended)

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
        return self.detector.detect_around(image, boxes, scale=REGION_SCALE, size=REGION_SIZE,
                                           track_score=REGION_TRACK_SCORE)

    def _expected_boxes(self, image: np.ndarray) -> np.ndarray | None:
        """Predicted boxes of the tracks seen last frame, or None when the whole frame
        should be searched: a full pass is due, no track was seen, the detector cannot
        search regions, or the regions would cost half as much as the frame."""
        c = self.config
        if (self._frame - self._last_full >= c.detect_every
                or not hasattr(self.detector, "detect_around")):
            return None
        tracks = [t for t in self.tracker.live.values() if t.missed == 0]
        if not tracks:
            return None
        h, w = image.shape[:2]
        full_pixels = min(1.0, c.max_side / max(h, w)) ** 2 * h * w if c.max_side > 0 else h * w
        if len(tracks) * REGION_SIZE ** 2 > 0.5 * full_pixels:
            return None
        return np.stack([t.predicted_box(self._frame) for t in tracks])

    def _classify(self, image: np.ndarray, faces: Faces, crops: np.ndarray | None) -> Faces:
        """The classifier on ``faces``, from their crops when they were cut already."""
        if crops is None:
            return self.classifier.classify(image, faces)
        return self.classifier.classify(image, faces, crops=crops)

    def _untracked(self, image: np.ndarray, faces: Faces, timings: dict[str, float],
                   judgeable: np.ndarray | None, crops: np.ndarray | None) -> Faces:
        t0 = time.perf_counter()
        faces = self._classify(image, faces, crops)
        # the classifier's own argmax, also for faces shown as cannot judge
        masked = np.array([lab != "without_mask" for lab in faces.mask_labels], bool)
        if judgeable is not None and not judgeable.all():
            faces = faces.with_fields(mask_labels=np.where(
                judgeable, faces.mask_labels, np.array(UNKNOWN_MASK, object)))
        timings["classify"] = (time.perf_counter() - t0) * 1e3
        if self._can_identify() and len(faces):
            t0 = time.perf_counter()
            found = self._identify(image, faces, masked)
            faces = faces.with_fields(names=[name for name, _ in found],
                                      similarities=[sim for _, sim in found])
            timings["embed"] = (time.perf_counter() - t0) * 1e3
        return faces

    def _tracked(self, image: np.ndarray, faces: Faces, ts: float, timings: dict[str, float],
                 judgeable: np.ndarray | None,
                 crops: np.ndarray | None) -> tuple[Faces, list[Track]]:
        c = self.config
        t0 = time.perf_counter()
        faces = self.tracker.update(faces, self._frame, ts, judgeable)
        timings["track"] = (time.perf_counter() - t0) * 1e3

        t0 = time.perf_counter()
        looks = lower_face_colours(image, faces.boxes) if c.reclassify_change > 0 else None
        due = self.tracker.due(faces, self._frame, c.classify_every, looks, c.reclassify_change)
        if due.any():
            sub = faces[due]
            probs = self._classify(image, sub, None if crops is None else crops[due]).mask_probs
            for k, tid, p in zip(np.flatnonzero(due), sub.track_ids, probs, strict=True):
                self.tracker.update_mask(int(tid), p, self._frame,
                                         None if looks is None else looks[k])
        faces = self.tracker.mask_probs_for(faces)
        labels = self.tracker.stable_labels(faces)
        timings["classify"] = (time.perf_counter() - t0) * 1e3

        live = self.tracker.live
        if self._can_identify() and len(faces):
            t0 = time.perf_counter()
            need = self.tracker.identity_due(faces, self._frame)
            if need.any():
                sub = faces[need]
                # The track's stable label: the one shown, or for a face shown as cannot
                # judge, the label it had when it was last judged.
                masked = np.array([live[int(t)].mask_label not in (None, "without_mask")
                                   for t in sub.track_ids], bool)
                for tid, (name, sim) in zip(sub.track_ids, self._identify(image, sub, masked),
                                            strict=True):
                    self.tracker.set_identity(int(tid), name, sim, self._frame)
            timings["embed"] = (time.perf_counter() - t0) * 1e3
        faces = faces.with_fields(
            mask_labels=labels,
            names=[live[int(t)].identity if int(t) in live else None for t in faces.track_ids],
            similarities=[live[int(t)].best_similarity if int(t) in live else None
                          for t in faces.track_ids],
        )
        return faces, self.tracker.pop_ended()

    def _can_identify(self) -> bool:
        return self.embedder is not None and self.matcher is not None

    def _identify(self, image: np.ndarray, faces: Faces,
                  masked: np.ndarray) -> list[tuple[str | None, float]]:
        assert self.embedder is not None and self.matcher is not None
        if getattr(self.embedder, "mask_aware", False):
            # A masked face goes to the student, whose embedding lands where SFace puts the
            # face unmasked: it is matched against the plain templates.
            embeddings = self.embedder.embed(image, faces, masked=masked)  # type: ignore[call-arg]
            return self.matcher.identify(embeddings, masked, masked_templates=False)  # type: ignore[call-arg]
        return self.matcher.identify(self.embedder.embed(image, faces), masked)


def mask_summary(labels: list[str | None]) -> dict[str, int]:
    """Counts of each mask state shown (``SHOWN_MASK_STATES``) in a list of labels (None
    ignored)."""
    out = dict.fromkeys(SHOWN_MASK_STATES, 0)
    for lab in labels:
        if lab in out:
            out[lab] += 1
    return out
