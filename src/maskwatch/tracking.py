"""Face tracking across video frames, with per-track mask smoothing and identity.

The pipeline runs the detector on every frame and then :meth:`FaceTracker.update`,
which gives every face a track id. The expensive stages ask the tracker which faces
are :meth:`~FaceTracker.due` (new tracks, or not looked at for ``every`` frames), run
only on those, and report back through :meth:`~FaceTracker.update_mask` and
:meth:`~FaceTracker.set_identity`. A track's mask label is smoothed (an exponential
moving average of probabilities plus hysteresis) so it does not flicker when the
per-frame classifier disagrees with itself for a frame or two: an unsure look moves
the label only when the next look agrees, a decisive look moves it at once, and no
label is ever shown for fewer than ``hold_frames`` frames.

Association is greedy, in the spirit of SORT without the Kalman filter: each live
track's box is moved by its recent velocity (pixels per frame), then detections are
matched to tracks by descending IoU, and a centre-distance fallback catches small,
fast faces whose boxes no longer overlap.

Example:
    >>> tracker = FaceTracker()
    >>> faces = tracker.update(Faces(boxes=[[10, 10, 50, 50]]), frame_index=0, timestamp=0.0)
    >>> faces.track_ids.tolist()
    [1]
    >>> tracker.due(faces, frame_index=0, every=5).tolist()
    [True]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .ops.boxes import iou_matrix
from .ops.crop import colour_change
from .types import MASK_CLASSES, Faces

__all__ = ["FaceTracker", "Track", "iou_matrix"]

_NUM_CLASSES = len(MASK_CLASSES)


def _centres(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def _greedy_pairs(
    score: np.ndarray, allowed: np.ndarray, descending: bool
) -> list[tuple[int, int]]:
    """One-to-one (row, col) pairs taken greedily from the best score among ``allowed``."""
    rows, cols = np.nonzero(allowed)
    values = score[rows, cols]
    order = np.argsort(-values if descending else values, kind="stable")
    used_rows: set[int] = set()
    used_cols: set[int] = set()
    pairs = []
    for k in order:
        r, c = int(rows[k]), int(cols[k])
        if r not in used_rows and c not in used_cols:
            used_rows.add(r)
            used_cols.add(c)
            pairs.append((r, c))
    return pairs


@dataclass
class Track:
    """One face followed over consecutive frames.

    Attributes:
        track_id: positive id, unique within one :class:`FaceTracker` (starts at 1).
        box: last matched box, (4,) float32 xyxy in pixels.
        first_frame, last_frame: frame indices of the first and the last match.
        first_time, last_time: timestamps in seconds of the first and the last match,
            as given to :meth:`FaceTracker.update`.
        hits: number of frames in which a detection was matched to this track.
        missed: consecutive updates without a match (0 when matched this frame).
        mask_probs: smoothed mask probabilities over ``MASK_CLASSES``, (3,) float32,
            ``None`` until the first classification.
        mask_label: stable mask state (one of ``MASK_CLASSES``), ``None`` until the
            first classification; changes only with hysteresis.
        mask_counts: number of matched frames spent in each stable mask state, keyed
            by every name in ``MASK_CLASSES`` ("mask state over its life").
        last_classified: frame index of the last :meth:`FaceTracker.update_mask`, -1
            when never classified.
        classifications: how many classifications were folded in over the track's life.
        label_since: ``hits`` when the current ``mask_label`` was set (it has been
            shown on ``hits - label_since + 1`` matched frames).
        label_looks: classifications since the current ``mask_label`` was set, the
            one that set it included.
        identity: name of the person from the best named match so far; ``None`` while
            unknown (see :meth:`FaceTracker.set_identity`).
        similarity: similarity of the latest identity report (``None`` before any).
        last_identified: frame index of the latest identity report, -1 when never.
        best_similarity: similarity of the match behind ``identity`` (the highest
            similarity reported while unknown); ``None`` before any report.
        velocity: (2,) float32 smoothed centre motion in pixels per frame, used to
            predict where the face is in the next frame.
    """

    track_id: int
    box: np.ndarray
    first_frame: int
    last_frame: int
    first_time: float
    last_time: float
    hits: int = 1
    missed: int = 0
    mask_probs: np.ndarray | None = None
    mask_label: str | None = None
    mask_counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MASK_CLASSES, 0))
    last_classified: int = -1
    identity: str | None = None
    similarity: float | None = None
    last_identified: int = -1
    best_similarity: float | None = None
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))
    min_hits: int = field(default=2, repr=False)
    # Hysteresis state: the class the smoothed argmax has favoured over the stable
    # label, and for how many consecutive classifications.
    _candidate: int = field(default=-1, init=False, repr=False)
    _streak: int = field(default=0, init=False, repr=False)
    classifications: int = field(default=0, init=False)
    label_since: int = field(default=0, init=False)
    label_looks: int = field(default=0, init=False)
    # The face's lower-half colour at its last classification (ops.crop.lower_face_colours).
    _look: np.ndarray | None = field(default=None, init=False, repr=False)

    @property
    def confirmed(self) -> bool:
        """True once the track has been matched in at least ``min_hits`` frames."""
        return self.hits >= self.min_hits

    @property
    def duration(self) -> float:
        """Seconds between the first and the last match."""
        return self.last_time - self.first_time

    def predicted_box(self, frame_index: int) -> np.ndarray:
        """Box expected at ``frame_index``: the last box moved by velocity times the gap."""
        shift = self.velocity * float(max(frame_index - self.last_frame, 0))
        return self.box + np.concatenate([shift, shift]).astype(np.float32)


class FaceTracker:
    """Gives faces stable ids across frames and smooths per-track mask states.

    Args:
        iou_threshold: least IoU in [0, 1] between a track's predicted box and a
            detection for them to match; lower follows faster motion but swaps ids
            more easily. 0.3 is typical.
        max_missed: a track survives this many consecutive frames without a match
            (at 25 fps, 15 is 0.6 s of occlusion); one more miss ends it.
        min_hits: matched frames before a track counts as ``confirmed``.
        ema: weight in (0, 1] of a new classification in the smoothed probabilities
            (1 = no smoothing).
        switch_frames: consecutive classifications whose smoothed argmax must agree on
            a new class before the stable label switches to it.
        switch_margin: how much the new class's smoothed probability must exceed the
            current stable label's (probability units) to switch that way.
        switch_confidence: a single look whose top probability reaches this (0-1)
            switches the label to its class at once, and restarts the smoothed
            probabilities from that look (None = only the ``switch_frames`` way). At 0.5
            or more such a look favours its class over all others together.
        hold_frames: a label, once shown, stays for at least this many matched frames
            before it may switch again, so no label ever shows for a single frame
            (1 = no hold).
        settle_looks: a new track is classified on at least this many frames before
            its label counts as settled (one view can mislead).
        settle_confidence: a track's label counts as settled only once its smoothed
            top probability reaches this (0-1); until then the track is classified on
            every frame (0 = settled after ``settle_looks`` classifications however
            unsure they were).
    """

    def __init__(
        self,
        iou_threshold: float = 0.3,
        max_missed: int = 15,
        min_hits: int = 2,
        ema: float = 0.5,
        switch_frames: int = 2,
        switch_margin: float = 0.15,
        switch_confidence: float | None = 0.5,
        hold_frames: int = 2,
        settle_looks: int = 3,
        settle_confidence: float = 0.7,
    ) -> None:
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        if max_missed < 0 or min_hits < 1 or switch_frames < 1 or settle_looks < 1 or hold_frames < 1:
            raise ValueError("max_missed must be >= 0, min_hits, switch_frames, settle_looks and hold_frames >= 1")
        if not 0.0 < ema <= 1.0:
            raise ValueError(f"ema must be in (0, 1], got {ema}")
        if not 0.0 <= switch_margin < 1.0:
            raise ValueError(f"switch_margin must be in [0, 1), got {switch_margin}")
        if not 0.0 <= settle_confidence <= 1.0:
            raise ValueError(f"settle_confidence must be in [0, 1], got {settle_confidence}")
        if switch_confidence is not None and not 0.0 < switch_confidence <= 1.0:
            raise ValueError(f"switch_confidence must be in (0, 1] or None, got {switch_confidence}")
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self.min_hits = min_hits
        self.ema = ema
        self.switch_frames = switch_frames
        self.switch_margin = switch_margin
        self.switch_confidence = switch_confidence
        self.hold_frames = hold_frames
        self.settle_looks = settle_looks
        self.settle_confidence = settle_confidence
        self._live: dict[int, Track] = {}
        self._ended: list[Track] = []
        self._next_id = 1

    @property
    def live(self) -> dict[int, Track]:
        """Live tracks by id (a new dict; the tracks themselves are shared)."""
        return dict(self._live)

    # -- association -------------------------------------------------------------

    def update(self, faces: Faces, frame_index: int, timestamp: float) -> Faces:
        """Match this frame's detections to live tracks and return them with track ids.

        Detections and tracks (boxes predicted with each track's velocity) are paired
        greedily by descending IoU (``>= iou_threshold``); the rest are paired by
        ascending centre distance when it is below half the track box's diagonal and
        the widths differ by at most 2x. Each track takes at most one detection.
        Unmatched detections open new tracks (ids 1, 2, ...); unmatched tracks count
        a miss and end after more than ``max_missed`` consecutive misses.

        Args:
            faces: this frame's detections (any ``track_ids`` are overwritten).
            frame_index: index of the frame, increasing between calls.
            timestamp: time of the frame in seconds.

        Returns:
            ``faces`` with ``track_ids`` set (every face gets a track).
        """
        boxes = faces.boxes
        tracks = list(self._live.values())
        ids = np.full(len(faces), -1, np.int64)
        pairs: list[tuple[int, int]] = []
        if tracks and len(faces):
            predicted = np.stack([t.predicted_box(frame_index) for t in tracks])
            ious = iou_matrix(predicted, boxes)
            pairs = _greedy_pairs(ious, ious >= self.iou_threshold, descending=True)
            free_t = np.ones(len(tracks), bool)
            free_d = np.ones(len(faces), bool)
            for t, d in pairs:
                free_t[t] = free_d[d] = False
            if free_t.any() and free_d.any():
                # Small fast faces can move past IoU overlap between two frames.
                diag = np.hypot(
                    predicted[:, 2] - predicted[:, 0], predicted[:, 3] - predicted[:, 1]
                )
                dist = np.linalg.norm(_centres(predicted)[:, None] - _centres(boxes)[None], axis=2)
                rel = dist / np.maximum(diag[:, None], 1e-6)
                wt = np.maximum(predicted[:, 2] - predicted[:, 0], 1e-6)[:, None]
                wd = np.maximum(faces.widths, 1e-6)[None]
                similar_size = np.minimum(wt, wd) / np.maximum(wt, wd) >= 0.5
                allowed = (rel < 0.5) & similar_size & free_t[:, None] & free_d[None]
                pairs += _greedy_pairs(rel, allowed, descending=False)

        matched: set[int] = set()
        for t, d in pairs:
            track = tracks[t]
            self._match(track, boxes[d], frame_index, timestamp)
            ids[d] = track.track_id
            matched.add(track.track_id)
        for track in tracks:
            if track.track_id not in matched:
                track.missed += 1
                if track.missed > self.max_missed:
                    self._end(track)
        for d in np.flatnonzero(ids < 0):
            ids[d] = self._open(boxes[d], frame_index, timestamp).track_id
        return faces.with_fields(track_ids=ids)

    def _match(self, track: Track, box: np.ndarray, frame_index: int, timestamp: float) -> None:
        gap = max(frame_index - track.last_frame, 1)
        step = (_centres(box[None])[0] - _centres(track.box[None])[0]) / gap
        # The first step sets the velocity; later ones are averaged to damp jitter.
        velocity = step if track.hits == 1 else 0.5 * track.velocity + 0.5 * step
        track.velocity = velocity.astype(np.float32)
        track.box = np.array(box, np.float32)
        track.last_frame = frame_index
        track.last_time = float(timestamp)
        track.hits += 1
        track.missed = 0
        if track.mask_label is not None:
            track.mask_counts[track.mask_label] += 1

    def _open(self, box: np.ndarray, frame_index: int, timestamp: float) -> Track:
        track = Track(
            track_id=self._next_id,
            box=np.array(box, np.float32),
            first_frame=frame_index,
            last_frame=frame_index,
            first_time=float(timestamp),
            last_time=float(timestamp),
            min_hits=self.min_hits,
        )
        self._next_id += 1
        self._live[track.track_id] = track
        return track

    def _end(self, track: Track) -> None:
        del self._live[track.track_id]
        self._ended.append(track)

    def pop_ended(self) -> list[Track]:
        """Tracks ended since the last call (oldest first), each returned once.

        Unconfirmed tracks (often false detections) are included; filter on
        ``track.confirmed`` before logging events.
        """
        ended, self._ended = self._ended, []
        return ended

    def end_all(self) -> list[Track]:
        """End every live track (at the end of a video) and return all ended tracks.

        The result also holds tracks that ended earlier but were not popped yet, so
        that nothing is lost when a video ends between two :meth:`pop_ended` calls.
        """
        for track in list(self._live.values()):
            self._end(track)
        return self.pop_ended()

    # -- scheduling of expensive stages --------------------------------------------

    #: Least frames between two classifications of a track that a change of look asks for.
    CHANGE_GAP = 3

    def due(self, faces: Faces, frame_index: int, every: int, looks: np.ndarray | None = None,
            change: float = 0.0) -> np.ndarray:
        """Which faces need a (mask) classification at this frame.

        Args:
            faces: faces returned by :meth:`update` for this frame.
            frame_index: the current frame index.
            every: classify each track at least once per this many frames (1 = always).
            looks: (N, 3) lower-face colours of the faces now
                (:func:`~maskwatch.ops.crop.lower_face_colours`), or None. A settled
                face whose colour has moved more than ``change``
                (:func:`~maskwatch.ops.crop.colour_change`) since its track's last
                classification is due at once, at most every ``CHANGE_GAP`` frames:
                a mask went on, off or down.
            change: see ``looks``; 0 turns the check off.

        Returns:
            (N,) bool: True for faces that have no live track, whose track was never
            classified, whose last classification is ``every`` or more frames old, or
            whose track is unsettled: its label has had fewer than ``settle_looks``
            classifications (one view can be misleading, so a new track, and a label
            that just changed, are looked at on their first frames), its smoothed
            top probability is under ``settle_confidence`` (the classifier is unsure
            of this face), or its latest looks disagree with its stable label. An unsettled track is
            classified on every frame until its label switches or is confirmed, so a
            wrong or unsure label lasts a few frames, not ``every``.
        """
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        out = np.ones(len(faces), bool)
        for i, tid in enumerate(faces.track_ids.tolist()):
            track = self._live.get(tid)
            if track is not None and track.last_classified >= 0:
                unsettled = (track.label_looks < self.settle_looks or track._streak > 0
                             or (track.mask_probs is not None
                                 and float(track.mask_probs.max()) < self.settle_confidence))
                out[i] = unsettled or track.last_classified <= frame_index - every
                if (not out[i] and looks is not None and change > 0 and track._look is not None
                        and track.last_classified <= frame_index - self.CHANGE_GAP):
                    out[i] = colour_change(looks[i], track._look) > change
        return out

    # -- mask state ----------------------------------------------------------------

    def _track(self, track_id: int) -> Track:
        try:
            return self._live[int(track_id)]
        except KeyError:
            raise KeyError(f"no live track with id {track_id}") from None

    def update_mask(self, track_id: int, probs: np.ndarray, frame_index: int, look: np.ndarray | None = None) -> None:
        """Fold one classification of a track's face into its smoothed mask state.

        The smoothed probabilities are ``ema * probs + (1 - ema) * previous`` (the
        first classification is taken as is). The first stable label is the argmax.
        After that the label switches to another class in one of two ways, and never
        before it has been shown on ``hold_frames`` matched frames:

        - a decisive look: this classification's top probability reaches
          ``switch_confidence``; the smoothed probabilities restart from it, so the
          shown probability belongs to the shown label;
        - agreeing looks: the smoothed argmax has been that class for
          ``switch_frames`` consecutive classifications and its smoothed probability
          exceeds the stable label's by at least ``switch_margin``.

        A look that wants a switch during the hold still counts towards the second way.

        Args:
            track_id: a live track id, from the faces returned by :meth:`update`.
            probs: (3,) probabilities over ``MASK_CLASSES`` from the classifier.
            frame_index: the current frame index.
            look: the face's lower-face colour now (see :meth:`due`), kept to compare with.

        Raises:
            KeyError: when the track is not live.
        """
        track = self._track(track_id)
        if look is not None:
            track._look = np.asarray(look, np.float32).copy()
        probs = np.asarray(probs, np.float32).reshape(-1)
        if probs.shape != (_NUM_CLASSES,):
            raise ValueError(f"probs must have {_NUM_CLASSES} values, got {probs.shape}")
        track.last_classified = frame_index
        track.classifications += 1
        track.label_looks += 1
        if track.mask_probs is None:
            track.mask_probs = probs.copy()
            track.mask_label = MASK_CLASSES[int(probs.argmax())]
            track.label_since = track.hits
            if track.last_frame == frame_index:
                track.mask_counts[track.mask_label] += 1  # update() ran before the label existed
            return
        stable = MASK_CLASSES.index(track.mask_label)
        may_switch = track.hits - track.label_since >= self.hold_frames
        look = int(probs.argmax())
        if (may_switch and look != stable and self.switch_confidence is not None
                and probs[look] >= self.switch_confidence):
            track.mask_probs = probs.copy()
            self._switch(track, look)
            return
        p = (self.ema * probs + (1.0 - self.ema) * track.mask_probs).astype(np.float32)
        track.mask_probs = p
        top = int(p.argmax())
        if top == stable:
            track._candidate, track._streak = -1, 0
            return
        if top == track._candidate:
            track._streak += 1
        else:
            track._candidate, track._streak = top, 1
        if may_switch and track._streak >= self.switch_frames and p[top] - p[stable] >= self.switch_margin:
            self._switch(track, top)

    @staticmethod
    def _switch(track: Track, label: int) -> None:
        track.mask_label = MASK_CLASSES[label]
        track.label_since = track.hits
        track.label_looks = 1
        track._candidate, track._streak = -1, 0

    def mask_probs_for(self, faces: Faces) -> Faces:
        """Faces with ``mask_probs`` replaced by their tracks' smoothed probabilities.

        Faces whose track was never classified (or that have no live track) keep
        their own per-frame probabilities when ``faces`` has them, and otherwise get
        the uniform 1/3 (no opinion), so every row is a valid distribution.

        Returns:
            A copy of ``faces`` with (N, 3) float32 ``mask_probs``.
        """
        n = len(faces)
        out = np.full((n, _NUM_CLASSES), 1.0 / _NUM_CLASSES, np.float32)
        if faces.has_mask_probs and faces.mask_probs.shape[1] == _NUM_CLASSES:
            out[:] = faces.mask_probs
        for i, tid in enumerate(faces.track_ids.tolist()):
            track = self._live.get(tid)
            if track is not None and track.mask_probs is not None:
                out[i] = track.mask_probs
        return faces.with_fields(mask_probs=out)

    def stable_labels(self, faces: Faces) -> list[str | None]:
        """Stable mask state of each face's track (``None`` when not classified yet)."""
        labels: list[str | None] = []
        for tid in faces.track_ids.tolist():
            track = self._live.get(tid)
            labels.append(track.mask_label if track is not None else None)
        return labels

    # -- identity --------------------------------------------------------------------

    def forget_identities(self) -> None:
        """Drop every live track's identity so each is looked up again at once (the
        gallery changed: a removed person's name must not stay on screen)."""
        for track in self._live.values():
            track.identity = None
            track.similarity = None
            track.best_similarity = None
            track.last_identified = -1

    def set_identity(
        self, track_id: int, name: str | None, similarity: float, frame_index: int
    ) -> None:
        """Record one recognition of a track's face.

        ``similarity`` and ``last_identified`` always take the latest report. The
        track's ``identity`` is the name from the named report with the highest
        similarity so far, and ``best_similarity`` that similarity (while the track is
        unknown: the highest similarity reported). So one poor frame (profile, blur)
        cannot rename a track, and an unknown result (``name=None``) never erases a name.

        Args:
            track_id: a live track id.
            name: the matched person's name, or ``None`` when unknown.
            similarity: similarity of the best gallery match (higher is closer).
            frame_index: the current frame index.

        Raises:
            KeyError: when the track is not live.
        """
        track = self._track(track_id)
        similarity = float(similarity)
        track.similarity = similarity
        track.last_identified = frame_index
        better = track.best_similarity is None or similarity > track.best_similarity
        if name is not None and (better or track.identity is None):
            track.identity = name
            track.best_similarity = similarity
        elif better and track.identity is None:
            track.best_similarity = similarity
