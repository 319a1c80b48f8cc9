"""Mask-label smoothing: a track's stable mask label, and when its face is classified.

A track's mask label is smoothed (an exponential moving average of probabilities plus
hysteresis) so it does not flicker when the per-frame classifier disagrees with itself
for a frame or two: an unsure look moves the label only when the next look agrees, a
decisive look moves it at once, and no label is ever shown for fewer than
``hold_frames`` frames. The classifier runs only on faces that are :meth:`~MaskSmoother.due`:
new or unsettled tracks, tracks not looked at for ``every`` frames, and faces whose
lower half changed colour (a mask went on, off or down).

With a quality rule (:class:`~maskwatch.ops.quality.QualityRule`), a frame on which the
face fails it (``Track.judgeable`` False) is never due and leaves the smoothed state as it
is. Whether the track is shown with its label or as ``UNKNOWN_MASK`` ("cannot judge",
``Track.judged``) follows the rule with the same hold as the labels: it changes when the
rule has said otherwise on ``hold_frames`` matched frames in a row
(:meth:`MaskSmoother.judge`), so a face whose light hovers at a threshold does not
flicker. A track whose face never passed the rule is shown as ``UNKNOWN_MASK``.

A track is also shown as ``UNKNOWN_MASK`` while it is *contested*: the classifier keeps
changing its mind about the face (``contest_changes`` changes of the class two looks in
a row agree on, among its last ``contest_looks`` looks; a face changing state changes
it once or twice), as on a dark face half hidden behind another head, whose looks swing
between ``with_mask`` and ``without_mask`` at 0.6-0.9. Smoothing alone would show
whichever class won the last few looks, confidently and wrongly half the time. It is
shown with its label again once ``contest_looks`` looks in a row agree.
"""

from __future__ import annotations

import numpy as np

from ..ops.crop import colour_change
from ..types import MASK_CLASSES, UNKNOWN_MASK, Faces
from .config import TrackerConfig
from .track import Track

__all__ = ["CHANGE_GAP", "MaskSmoother", "shown_labels", "shown_probs"]

_NUM_CLASSES = len(MASK_CLASSES)

#: Least frames between two classifications of a track that a change of look asks for:
#: a mask being pulled up or down changes the colour over several frames, and one look
#: in three frames follows it without classifying the face on every one of them.
CHANGE_GAP = 3


class MaskSmoother:
    """The rules of a track's mask label; writes the mask fields of :class:`Track`.

    Args:
        config: reads ``ema``, ``switch_frames``, ``switch_margin``,
            ``switch_confidence``, ``hold_frames``, ``settle_looks`` and
            ``settle_confidence``.
    """

    def __init__(self, config: TrackerConfig) -> None:
        self.config = config

    def due(self, track: Track | None, frame_index: int, every: int,
            look: np.ndarray | None = None, change: float = 0.0) -> bool:
        """Whether a face on ``track`` needs a classification at this frame.

        Args:
            track: the face's live track (None: it has none).
            frame_index: the current frame index.
            every: classify each track at least once per this many frames (1 = always).
            look: the face's lower-face colour now
                (:func:`~maskwatch.ops.crop.lower_face_colours`), or None. A settled
                face whose colour has moved more than ``change``
                (:func:`~maskwatch.ops.crop.colour_change`) since its track's last
                classification is due at once, at most every ``CHANGE_GAP`` frames.
            change: see ``look``; 0 turns the check off.

        Returns:
            False for a face that failed the quality rule on this frame
            (``track.judgeable`` False): nothing is learnt from it. Otherwise True for
            a face with no track, whose track was never classified, whose last
            classification is ``every`` or more frames old, or whose track is
            unsettled: its label has had fewer than ``settle_looks`` classifications
            (one view can be misleading, so a new track, and a label that just
            changed, are looked at on their first frames), its smoothed top
            probability is under ``settle_confidence`` (the classifier is unsure of
            this face), its latest looks disagree with its stable label, or it is
            contested (its looks keep changing class). An unsettled track is
            classified on every frame until its label switches or is confirmed, so a
            wrong or unsure label lasts a few frames, not ``every``.
        """
        if track is not None and not track.judgeable:
            return False
        if track is None or track.last_classified < 0:
            return True
        c = self.config
        unsettled = (track.label_looks < c.settle_looks or track.switch_streak > 0
                     or track.contested
                     or (c.contest_changes > 0
                         and _changes(track.look_classes) >= c.contest_changes)
                     or (track.mask_probs is not None
                         and float(track.mask_probs.max()) < c.settle_confidence))
        if unsettled or track.last_classified <= frame_index - every:
            return True
        if (look is not None and change > 0 and track.last_look is not None
                and track.last_classified <= frame_index - CHANGE_GAP):
            return bool(colour_change(look, track.last_look) > change)
        return False

    def fold(self, track: Track, probs: np.ndarray, frame_index: int,
             look: np.ndarray | None = None) -> None:
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
            track: the face's live track.
            probs: (3,) probabilities over ``MASK_CLASSES`` from the classifier.
            frame_index: the current frame index.
            look: the face's lower-face colour now (see :meth:`due`), kept to compare with.

        A frame already counted in ``mask_counts`` (the track was matched on it) whose
        shown state this look changes (a switch, or the track becoming contested) is
        counted in the state shown after it, as the frame is drawn.
        """
        counted = track.last_frame == frame_index and track.mask_label is not None
        before = _shown_state(track)
        self._fold(track, probs, frame_index, look)
        after = _shown_state(track)
        if counted and before != after and before is not None and after is not None:
            track.mask_counts[before] -= 1
            track.mask_counts[after] += 1

    def _fold(self, track: Track, probs: np.ndarray, frame_index: int,
              look: np.ndarray | None) -> None:
        c = self.config
        if look is not None:
            track.last_look = np.asarray(look, np.float32).copy()
        probs = np.asarray(probs, np.float32).reshape(-1)
        if probs.shape != (_NUM_CLASSES,):
            raise ValueError(f"probs must have {_NUM_CLASSES} values, got {probs.shape}")
        track.last_classified = frame_index
        track.classifications += 1
        track.label_looks += 1
        self._contest(track, int(probs.argmax()))
        if track.mask_probs is None:
            track.mask_probs = probs.copy()
            track.mask_label = MASK_CLASSES[int(probs.argmax())]
            track.label_since = track.hits
            if track.last_frame == frame_index and track.judged:
                # Matched this frame before the label existed: count this frame too
                # (unless it was counted as cannot judge).
                track.mask_counts[track.mask_label] += 1
            return
        stable = MASK_CLASSES.index(track.mask_label)
        may_switch = track.hits - track.label_since >= c.hold_frames
        top_now = int(probs.argmax())
        if (may_switch and top_now != stable and c.switch_confidence is not None
                and probs[top_now] >= c.switch_confidence):
            track.mask_probs = probs.copy()
            self._switch(track, top_now)
            return
        p = (c.ema * probs + (1.0 - c.ema) * track.mask_probs).astype(np.float32)
        track.mask_probs = p
        top = int(p.argmax())
        if top == stable:
            track.switch_candidate, track.switch_streak = -1, 0
            return
        if top == track.switch_candidate:
            track.switch_streak += 1
        else:
            track.switch_candidate, track.switch_streak = top, 1
        if (may_switch and track.switch_streak >= c.switch_frames
                and p[top] - p[stable] >= c.switch_margin):
            self._switch(track, top)

    def _contest(self, track: Track, top: int) -> None:
        """Record one look's top class and update ``track.contested``: on at
        ``contest_changes`` changes (see :func:`_changes`) among the last ``contest_looks``
        looks, once the label shown has had its ``hold_frames``; off once those looks all
        agree."""
        c = self.config
        if c.contest_changes <= 0:
            return
        looks = track.look_classes
        looks.append(top)
        del looks[:-c.contest_looks]
        changes = _changes(looks)
        if not track.contested:
            track.contested = (changes >= c.contest_changes
                               and track.hits - track.label_since >= c.hold_frames)
        elif len(looks) == c.contest_looks and len(set(looks)) == 1:
            track.contested = False

    def judge(self, track: Track, judgeable: bool, first: bool = False) -> None:
        """Take whether the face passed the quality rule on this matched frame.

        Sets ``track.judgeable``; ``track.judged`` (shown with its label, or as
        ``UNKNOWN_MASK``) takes that value on the track's ``first`` frame, and later
        once it has disagreed with it on ``hold_frames`` matched frames in a row.
        """
        track.judgeable = bool(judgeable)
        if first or track.judgeable == track.judged:
            track.judged, track.judged_streak = track.judgeable, 0
            return
        track.judged_streak += 1
        if track.judged_streak >= self.config.hold_frames:
            track.judged, track.judged_streak = track.judgeable, 0

    @staticmethod
    def count_shown(track: Track) -> None:
        """Count one more matched frame in the state shown: ``UNKNOWN_MASK`` while the
        track is shown as cannot judge or contested (``Track.shown_unknown``), else its
        label (if it has one)."""
        if track.shown_unknown:
            track.mask_counts[UNKNOWN_MASK] += 1
        elif track.mask_label is not None:
            track.mask_counts[track.mask_label] += 1

    @staticmethod
    def _switch(track: Track, label: int) -> None:
        track.mask_label = MASK_CLASSES[label]
        track.label_since = track.hits
        track.label_looks = 1
        track.switch_candidate, track.switch_streak = -1, 0


def _shown_state(track: Track) -> str | None:
    """The state a track is drawn in: ``UNKNOWN_MASK``, its stable label, or None."""
    return UNKNOWN_MASK if track.shown_unknown else track.mask_label


def _changes(looks: list[int]) -> int:
    """How often the class that two looks in a row agree on changed: a single look
    that disagrees with the looks around it (a blip, which smoothing never shows) is
    no change."""
    changes, held = 0, None
    for a, b in zip(looks, looks[1:], strict=False):
        if a == b and a != held:
            changes += held is not None
            held = a
    return changes


def shown_probs(faces: Faces, tracks: list[Track | None]) -> Faces:
    """``faces`` with ``mask_probs`` replaced by their tracks' smoothed probabilities.

    Faces whose track was never classified (or that have none: None in ``tracks``)
    keep their own per-frame probabilities when ``faces`` has them, and otherwise get
    the uniform 1/3 (no opinion), so every row is a valid distribution.
    """
    out = np.full((len(faces), _NUM_CLASSES), 1.0 / _NUM_CLASSES, np.float32)
    if faces.has_mask_probs and faces.mask_probs.shape[1] == _NUM_CLASSES:
        out[:] = faces.mask_probs
    for i, track in enumerate(tracks):
        if track is not None and track.mask_probs is not None:
            out[i] = track.mask_probs
    return faces.with_fields(mask_probs=out)


def shown_labels(tracks: list[Track | None]) -> list[str | None]:
    """Mask state shown for each track's face: ``UNKNOWN_MASK`` while the track is shown
    as cannot judge or contested (``Track.shown_unknown``), else its stable label
    (``None`` for no track or none classified yet)."""
    return [None if track is None else _shown_state(track) for track in tracks]
