"""One face followed over frames (:class:`Track`).

Three parts of the tracker each write their own group of a track's fields, and only
read the others: box matching (:mod:`.matching`) where the face is and when it was
seen, mask-label smoothing (:mod:`.smoothing`) its mask state, identity memory
(:mod:`.identity`) who it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..types import SHOWN_MASK_STATES

__all__ = ["CONFIRM_HITS", "Track"]

#: Matched frames before a track counts as :attr:`Track.confirmed`. A face found on one
#: frame only is most often a false detection (a pattern, a blur) that the next frame
#: does not repeat; two frames already rule most of those out. Nobody ever set another.
CONFIRM_HITS = 2


@dataclass
class Track:
    """One face followed over consecutive frames.

    Box matching (:class:`~maskwatch.tracking.matching.BoxMatcher`) writes:

    Attributes:
        track_id: positive id, unique within one tracker (starts at 1).
        box: last matched box, (4,) float32 xyxy in pixels.
        first_frame, last_frame: frame indices of the first and the last match.
        first_time, last_time: timestamps in seconds of the first and the last match,
            as given to :meth:`~maskwatch.tracking.FaceTracker.update`.
        hits: number of frames in which a detection was matched to this track.
        missed: consecutive updates without a match (0 when matched this frame).
        velocity: (2,) float32 smoothed centre motion in pixels per frame, used to
            predict where the face is in the next frame.

    Mask-label smoothing (:class:`~maskwatch.tracking.smoothing.MaskSmoother`) writes:

    Attributes:
        mask_probs: smoothed mask probabilities over ``MASK_CLASSES``, (3,) float32,
            ``None`` until the first classification.
        mask_label: stable mask state (one of ``MASK_CLASSES``), ``None`` until the
            first classification; changes only with hysteresis.
        mask_counts: number of matched frames shown in each mask state, keyed by every
            name in ``SHOWN_MASK_STATES`` ("mask state over its life"): each frame in the
            state it is drawn in, the stable label or ``UNKNOWN_MASK`` (``shown_unknown``).
        judgeable: whether the face passed the quality rule
            (:class:`~maskwatch.ops.quality.QualityRule`) on the track's latest matched
            frame; True when no rule is applied. A frame that fails it is neither
            classified nor folded into the smoothed state.
        judged: whether the track is shown with its label (True) or as ``UNKNOWN_MASK``
            (False, "cannot judge"). It starts as ``judgeable`` on the first frame and
            changes only when ``judgeable`` has disagreed with it on ``hold_frames``
            matched frames in a row, so that a face near a threshold is not shown as
            cannot judge for a single frame.
        judged_streak: matched frames in a row on which ``judgeable`` disagreed with
            ``judged``.
        last_classified: frame index of the last classification, -1 when never.
        classifications: how many classifications were folded in over the track's life.
        label_since: ``hits`` when the current ``mask_label`` was set (it has been
            shown on ``hits - label_since + 1`` matched frames).
        label_looks: classifications since the current ``mask_label`` was set, the
            one that set it included.
        switch_candidate, switch_streak: the class the smoothed argmax has favoured
            over the stable label (-1: none), and for how many classifications in a row.
        last_look: the face's lower-half colour at its last classification
            (:func:`~maskwatch.ops.crop.lower_face_colours`), None when not given.
        look_classes: the top class (index into ``MASK_CLASSES``) of each of the
            latest classifications, at most ``contest_looks``, oldest first.
        contested: whether the classifier keeps changing its mind about this face
            (see :class:`~maskwatch.tracking.TrackerConfig`); a contested track is
            shown as ``UNKNOWN_MASK`` like one that is not ``judged``.

    Identity memory (:mod:`~maskwatch.tracking.identity`) writes:

    Attributes:
        identity: name of the person from the best named match so far; ``None`` while
            unknown.
        similarity: similarity of the latest identity report (``None`` before any).
        last_identified: frame index of the latest identity report, -1 when never.
        best_similarity: similarity of the match behind ``identity`` (the highest
            similarity reported while unknown); ``None`` before any report.
    """

    # -- box matching ------------------------------------------------------------------
    track_id: int
    box: np.ndarray
    first_frame: int
    last_frame: int
    first_time: float
    last_time: float
    hits: int = 1
    missed: int = 0
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))
    # -- mask-label smoothing ----------------------------------------------------------
    mask_probs: np.ndarray | None = None
    mask_label: str | None = None
    mask_counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(SHOWN_MASK_STATES, 0))
    judgeable: bool = True
    judged: bool = True
    judged_streak: int = field(default=0, init=False, repr=False)
    last_classified: int = -1
    classifications: int = field(default=0, init=False)
    label_since: int = field(default=0, init=False)
    label_looks: int = field(default=0, init=False)
    switch_candidate: int = field(default=-1, init=False, repr=False)
    switch_streak: int = field(default=0, init=False, repr=False)
    last_look: np.ndarray | None = field(default=None, init=False, repr=False)
    look_classes: list[int] = field(default_factory=list, init=False, repr=False)
    contested: bool = field(default=False, init=False)
    # -- identity memory ---------------------------------------------------------------
    identity: str | None = None
    similarity: float | None = None
    last_identified: int = -1
    best_similarity: float | None = None

    @property
    def confirmed(self) -> bool:
        """True once the track has been matched in at least ``CONFIRM_HITS`` frames."""
        return self.hits >= CONFIRM_HITS

    @property
    def shown_unknown(self) -> bool:
        """True while the track is shown as ``UNKNOWN_MASK``: not ``judged`` (the quality
        rule) or ``contested`` (the classifier keeps changing its mind)."""
        return not self.judged or self.contested

    @property
    def duration(self) -> float:
        """Seconds between the first and the last match."""
        return self.last_time - self.first_time

    def predicted_box(self, frame_index: int) -> np.ndarray:
        """Box expected at ``frame_index``: the last box moved by velocity times the gap."""
        shift = self.velocity * float(max(frame_index - self.last_frame, 0))
        return self.box + np.concatenate([shift, shift]).astype(np.float32)
