"""Box matching: which of this frame's detections continues which track.

Association is greedy, in the spirit of SORT without the Kalman filter: each live
track's box is moved by its recent velocity (pixels per frame), then detections are
matched to tracks by descending IoU, and a centre-distance fallback catches small,
fast faces whose boxes no longer overlap. Unmatched detections open tracks; a track
unmatched for more than ``max_missed`` frames in a row ends.
"""

from __future__ import annotations

import numpy as np

from ..ops.boxes import iou_matrix
from ..types import Faces
from .config import TrackerConfig
from .track import Track

__all__ = ["BoxMatcher", "CENTRE_REACH", "MIN_WIDTH_RATIO", "VELOCITY_STEP_WEIGHT"]

#: Weight of the newest frame-to-frame step in a track's velocity, the rest being the
#: velocity so far: an even average damps the detector's box jitter yet follows a
#: face that speeds up within a couple of frames (a track's first step is taken as is).
VELOCITY_STEP_WEIGHT = 0.5
#: Centre-distance fallback: a detection may continue a track it does not overlap
#: enough when its centre is nearer the predicted box's centre than this fraction of
#: that box's diagonal. Half a diagonal keeps the fallback to the face's own
#: neighbourhood, so two faces side by side are never swapped by it.
CENTRE_REACH = 0.5
#: Centre-distance fallback: the narrower of the two boxes must be at least this
#: fraction of the wider one's width (at most 2x apart), so a near face is never
#: continued by a far, small one that happens to be close on screen.
MIN_WIDTH_RATIO = 0.5


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


class BoxMatcher:
    """Owns the live and ended tracks and their box-matching fields (see :class:`Track`).

    Args:
        config: reads ``iou_threshold`` and ``max_missed``.

    Attributes:
        live: live tracks by id (the tracker's own dict).
    """

    def __init__(self, config: TrackerConfig) -> None:
        self.config = config
        self.live: dict[int, Track] = {}
        self._ended: list[Track] = []
        self._next_id = 1

    def update(
        self, faces: Faces, frame_index: int, timestamp: float
    ) -> tuple[np.ndarray, list[Track]]:
        """Match this frame's detections to live tracks.

        Detections and tracks (boxes predicted with each track's velocity) are paired
        greedily by descending IoU (``>= iou_threshold``); the rest are paired by
        ascending centre distance when it is below ``CENTRE_REACH`` of the track box's
        diagonal and the widths differ by at most 1 / ``MIN_WIDTH_RATIO``. Each track
        takes at most one detection. Unmatched detections open new tracks (ids 1, 2,
        ...); unmatched tracks count a miss and end after more than ``max_missed``
        consecutive misses.

        Returns:
            (N,) int64 track id of each face, and the tracks that were live before
            this frame and matched in it (in the order they were matched).
        """
        boxes = faces.boxes
        tracks = list(self.live.values())
        ids = np.full(len(faces), -1, np.int64)
        pairs: list[tuple[int, int]] = []
        if tracks and len(faces):
            predicted = np.stack([t.predicted_box(frame_index) for t in tracks])
            ious = iou_matrix(predicted, boxes)
            pairs = _greedy_pairs(ious, ious >= self.config.iou_threshold, descending=True)
            free_t = np.ones(len(tracks), bool)
            free_d = np.ones(len(faces), bool)
            for t, d in pairs:
                free_t[t] = free_d[d] = False
            if free_t.any() and free_d.any():
                # Small fast faces can move past IoU overlap between two frames.
                diag = np.hypot(
                    predicted[:, 2] - predicted[:, 0], predicted[:, 3] - predicted[:, 1]
                )
                dist = np.linalg.norm(
                    _centres(predicted)[:, None] - _centres(boxes)[None], axis=2
                )
                rel = dist / np.maximum(diag[:, None], 1e-6)
                wt = np.maximum(predicted[:, 2] - predicted[:, 0], 1e-6)[:, None]
                wd = np.maximum(faces.widths, 1e-6)[None]
                similar_size = np.minimum(wt, wd) / np.maximum(wt, wd) >= MIN_WIDTH_RATIO
                allowed = (rel < CENTRE_REACH) & similar_size & free_t[:, None] & free_d[None]
                pairs += _greedy_pairs(rel, allowed, descending=False)

        matched: list[Track] = []
        for t, d in pairs:
            track = tracks[t]
            self._match(track, boxes[d], frame_index, timestamp)
            ids[d] = track.track_id
            matched.append(track)
        matched_ids = {track.track_id for track in matched}
        for track in tracks:
            if track.track_id not in matched_ids:
                track.missed += 1
                if track.missed > self.config.max_missed:
                    self._end(track)
        for d in np.flatnonzero(ids < 0):
            ids[d] = self._open(boxes[d], frame_index, timestamp).track_id
        return ids, matched

    @staticmethod
    def _match(track: Track, box: np.ndarray, frame_index: int, timestamp: float) -> None:
        gap = max(frame_index - track.last_frame, 1)
        step = (_centres(box[None])[0] - _centres(track.box[None])[0]) / gap
        # The first step sets the velocity; later ones are averaged to damp jitter.
        velocity = (step if track.hits == 1 else (1.0 - VELOCITY_STEP_WEIGHT) * track.velocity
                    + VELOCITY_STEP_WEIGHT * step)
        track.velocity = velocity.astype(np.float32)
        track.box = np.array(box, np.float32)
        track.last_frame = frame_index
        track.last_time = float(timestamp)
        track.hits += 1
        track.missed = 0

    def _open(self, box: np.ndarray, frame_index: int, timestamp: float) -> Track:
        track = Track(
            track_id=self._next_id,
            box=np.array(box, np.float32),
            first_frame=frame_index,
            last_frame=frame_index,
            first_time=float(timestamp),
            last_time=float(timestamp),
        )
        self._next_id += 1
        self.live[track.track_id] = track
        return track

    def _end(self, track: Track) -> None:
        del self.live[track.track_id]
        self._ended.append(track)

    def pop_ended(self) -> list[Track]:
        """Tracks ended since the last call (oldest first), each returned once."""
        ended, self._ended = self._ended, []
        return ended

    def end_all(self) -> list[Track]:
        """End every live track and return all ended tracks not popped yet."""
        for track in list(self.live.values()):
            self._end(track)
        return self.pop_ended()
