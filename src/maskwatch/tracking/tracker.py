"""The face tracker the pipeline drives: box matching, mask-label smoothing and identity
memory composed (:class:`FaceTracker`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from ..types import Faces
from . import identity
from .config import TrackerConfig
from .matching import BoxMatcher
from .smoothing import MaskSmoother, shown_labels, shown_probs
from .track import Track

__all__ = ["FaceTracker"]


class FaceTracker:
    """Gives faces stable ids across frames, smooths their mask labels and remembers
    who they are.

    Args:
        config: settings (None: the defaults of :class:`TrackerConfig`).
        **settings: :class:`TrackerConfig` fields that replace those of ``config``,
            e.g. ``FaceTracker(max_missed=5)``.

    Attributes:
        config: the settings in use.
        matching: box matching; owns the live and ended tracks.
        smoothing: the mask-label rules.

    Raises:
        ValueError: when a setting is out of its range (see :class:`TrackerConfig`).
    """

    def __init__(self, config: TrackerConfig | None = None, **settings: Any) -> None:
        self.config = replace(config or TrackerConfig(), **settings)
        self.matching = BoxMatcher(self.config)
        self.smoothing = MaskSmoother(self.config)

    @property
    def live(self) -> dict[int, Track]:
        """Live tracks by id (a new dict; the tracks themselves are shared)."""
        return dict(self.matching.live)

    def _tracks_of(self, faces: Faces) -> list[Track | None]:
        """The live track of each face (None where it has none)."""
        live = self.matching.live
        return [live.get(tid) for tid in faces.track_ids.tolist()]

    def _track(self, track_id: int) -> Track:
        try:
            return self.matching.live[int(track_id)]
        except KeyError:
            raise KeyError(f"no live track with id {track_id}") from None

    # -- box matching --------------------------------------------------------------

    def update(self, faces: Faces, frame_index: int, timestamp: float,
               judgeable: np.ndarray | None = None) -> Faces:
        """Match this frame's detections to live tracks and return them with track ids.

        See :meth:`~maskwatch.tracking.matching.BoxMatcher.update` for the matching;
        every face's track takes whether it passed the quality rule (see
        :meth:`MaskSmoother.judge <maskwatch.tracking.smoothing.MaskSmoother.judge>`),
        and every matched track counts this frame in the mask state it shows (see
        :meth:`MaskSmoother.count_shown
        <maskwatch.tracking.smoothing.MaskSmoother.count_shown>`), as does a new track
        shown as cannot judge (a new judged track counts its first frame when it is
        first classified).

        Args:
            faces: this frame's detections (any ``track_ids`` are overwritten).
            frame_index: index of the frame, increasing between calls.
            timestamp: time of the frame in seconds.
            judgeable: (N,) bool, which faces passed the quality rule on this frame
                (:class:`~maskwatch.ops.quality.QualityRule`); None: all of them.

        Returns:
            ``faces`` with ``track_ids`` set (every face gets a track).
        """
        ids, matched = self.matching.update(faces, frame_index, timestamp)
        live = self.matching.live
        ok = (np.ones(len(faces), bool) if judgeable is None
              else np.asarray(judgeable, bool).reshape(-1))
        if len(ok) != len(faces):
            raise ValueError(f"judgeable: {len(ok)} values for {len(faces)} faces")
        matched_ids = {track.track_id for track in matched}
        for tid, passed in zip(ids.tolist(), ok.tolist(), strict=True):
            track = live[tid]
            new = tid not in matched_ids
            self.smoothing.judge(track, passed, first=new)
            if new and not track.judged:
                self.smoothing.count_shown(track)  # a new track, shown as cannot judge
        for track in matched:
            self.smoothing.count_shown(track)
        return faces.with_fields(track_ids=ids)

    def pop_ended(self) -> list[Track]:
        """Tracks ended since the last call (oldest first), each returned once.

        Unconfirmed tracks (often false detections) are included; filter on
        ``track.confirmed`` before logging events.
        """
        return self.matching.pop_ended()

    def end_all(self) -> list[Track]:
        """End every live track (at the end of a video) and return all ended tracks.

        The result also holds tracks that ended earlier but were not popped yet, so
        that nothing is lost when a video ends between two :meth:`pop_ended` calls.
        """
        return self.matching.end_all()

    # -- mask-label smoothing ------------------------------------------------------

    def due(self, faces: Faces, frame_index: int, every: int, looks: np.ndarray | None = None,
            change: float = 0.0) -> np.ndarray:
        """Which faces need a (mask) classification at this frame.

        Args:
            faces: faces returned by :meth:`update` for this frame.
            frame_index: the current frame index.
            every: classify each track at least once per this many frames (1 = always).
            looks: (N, 3) lower-face colours of the faces now, or None.
            change: least colour change that makes a settled face due; 0 turns it off.

        Returns:
            (N,) bool, per face :meth:`MaskSmoother.due
            <maskwatch.tracking.smoothing.MaskSmoother.due>`.
        """
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        tracks = self._tracks_of(faces)
        return np.array([
            self.smoothing.due(track, frame_index, every, None if looks is None else looks[i],
                               change)
            for i, track in enumerate(tracks)
        ], bool)

    def update_mask(self, track_id: int, probs: np.ndarray, frame_index: int,
                    look: np.ndarray | None = None) -> None:
        """Fold one classification of a track's face into its smoothed mask state (see
        :meth:`MaskSmoother.fold <maskwatch.tracking.smoothing.MaskSmoother.fold>`).

        Raises:
            KeyError: when the track is not live.
        """
        self.smoothing.fold(self._track(track_id), probs, frame_index, look)

    def mask_probs_for(self, faces: Faces) -> Faces:
        """Faces with ``mask_probs`` replaced by their tracks' smoothed probabilities
        (see :func:`~maskwatch.tracking.smoothing.shown_probs`)."""
        return shown_probs(faces, self._tracks_of(faces))

    def stable_labels(self, faces: Faces) -> list[str | None]:
        """Mask state shown for each face (see
        :func:`~maskwatch.tracking.smoothing.shown_labels`): its track's stable label,
        ``UNKNOWN_MASK`` while the track is shown as cannot judge or contested
        (``Track.shown_unknown``), ``None`` when not classified yet."""
        return shown_labels(self._tracks_of(faces))

    # -- identity memory -------------------------------------------------------------

    def identity_due(self, faces: Faces, frame_index: int) -> np.ndarray:
        """(N,) bool: which faces to look up in the gallery at this frame (faces without
        a live track always; see :func:`~maskwatch.tracking.identity.identity_due`)."""
        return np.array([track is None or identity.identity_due(track, frame_index)
                         for track in self._tracks_of(faces)], bool)

    def set_identity(
        self, track_id: int, name: str | None, similarity: float, frame_index: int
    ) -> None:
        """Record one recognition of a track's face (see
        :func:`~maskwatch.tracking.identity.record_identity`).

        Raises:
            KeyError: when the track is not live.
        """
        identity.record_identity(self._track(track_id), name, similarity, frame_index)

    def forget_identities(self) -> None:
        """Drop every live track's identity so each is looked up again at once (the
        gallery changed: a removed person's name must not stay on screen)."""
        for track in self.matching.live.values():
            identity.forget_identity(track)
