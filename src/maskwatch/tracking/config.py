"""Settings of the face tracker (:class:`TrackerConfig`): box matching and mask smoothing."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TrackerConfig"]


@dataclass
class TrackerConfig:
    """Settings of :class:`~maskwatch.tracking.FaceTracker`, grouped by the part that reads them.

    Box matching (:class:`~maskwatch.tracking.matching.BoxMatcher`):

    Attributes:
        iou_threshold: least IoU in (0, 1] between a track's predicted box and a
            detection for them to match; lower follows faster motion but swaps ids
            more easily. 0.3 is typical.
        max_missed: a track survives this many consecutive frames without a match
            (at 25 fps, 15 is 0.6 s of occlusion); one more miss ends it.

    Mask-label smoothing (:class:`~maskwatch.tracking.smoothing.MaskSmoother`):

    Attributes:
        ema: weight in (0, 1] of a new classification in the smoothed probabilities
            (1 = no smoothing).
        switch_frames: consecutive classifications whose smoothed argmax must agree on
            a new class before the stable label switches to it.
        switch_margin: how much the new class's smoothed probability must exceed the
            current stable label's (probability units) to switch that way.
        switch_confidence: a single look whose top probability reaches this (0-1)
            switches the label to its class at once, and restarts the smoothed
            probabilities from that look (None = only the ``switch_frames`` way). At 0.5
            or more such a look favours its class over all others together; 0.7 (not
            0.5) showed a wrong label for 2 frames a quarter as often on held-out
            steady faces (``benchmarks/tracking_stills.py``).
        hold_frames: a label, once shown, stays for at least this many matched frames
            before it may switch again, so no label ever shows for a single frame
            (1 = no hold).
        settle_looks: a new track is classified on at least this many frames before
            its label counts as settled (one view can mislead).
        settle_confidence: a track's label counts as settled only once its smoothed
            top probability reaches this (0-1); until then the track is classified on
            every frame (0 = settled after ``settle_looks`` classifications however
            unsure they were).
        contest_looks, contest_changes: a track whose face the classifier keeps
            changing its mind about is shown as ``UNKNOWN_MASK`` ("contested", like a
            face the quality rule cannot judge): it becomes contested when, among its
            last ``contest_looks`` classifications, the class that two looks in a row
            agree on changed at least ``contest_changes`` times (a single look unlike
            its neighbours does not count; a face changing state, as when a mask is
            pulled down past the nose, changes it once or twice), and stops being
            contested once ``contest_looks`` classifications in a row agree. A
            contested track is classified on every frame. ``contest_changes`` 0 turns
            this off.

    Raises:
        ValueError: on construction, when a setting is out of its range.
    """

    # box matching
    iou_threshold: float = 0.3
    max_missed: int = 15
    # mask-label smoothing
    ema: float = 0.5
    switch_frames: int = 2
    switch_margin: float = 0.15
    switch_confidence: float | None = 0.7
    hold_frames: int = 2
    settle_looks: int = 3
    settle_confidence: float = 0.85
    contest_looks: int = 30
    contest_changes: int = 3

    def __post_init__(self) -> None:
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if self.max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {self.max_missed}")
        if self.contest_looks < 2:
            raise ValueError(f"contest_looks must be >= 2, got {self.contest_looks}")
        if not 0 <= self.contest_changes < self.contest_looks:
            raise ValueError(f"contest_changes must be in [0, contest_looks), got "
                             f"{self.contest_changes}")
        for name in ("switch_frames", "hold_frames", "settle_looks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.ema <= 1.0:
            raise ValueError(f"ema must be in (0, 1], got {self.ema}")
        if not 0.0 <= self.switch_margin < 1.0:
            raise ValueError(f"switch_margin must be in [0, 1), got {self.switch_margin}")
        if not 0.0 <= self.settle_confidence <= 1.0:
            raise ValueError(f"settle_confidence must be in [0, 1], got {self.settle_confidence}")
        if self.switch_confidence is not None and not 0.0 < self.switch_confidence <= 1.0:
            raise ValueError(
                f"switch_confidence must be in (0, 1] or None, got {self.switch_confidence}"
            )
