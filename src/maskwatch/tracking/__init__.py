"""Face tracking across video frames, with per-track mask smoothing and identity.

The pipeline runs the detector on every frame and then :meth:`FaceTracker.update`,
which gives every face a track id. The expensive stages ask the tracker which faces
are due, run only on those, and report back through :meth:`~FaceTracker.update_mask`
and :meth:`~FaceTracker.set_identity`. :class:`FaceTracker` composes three parts, each
in its own module and each writing its own group of :class:`Track` fields:

- :mod:`.matching`: box matching (velocity prediction, greedy IoU association with a
  centre-distance fallback, missed frames, ending tracks);
- :mod:`.smoothing`: mask-label smoothing (moving average, switch, hold and settle
  rules) and when a face is classified (:meth:`~FaceTracker.due`);
- :mod:`.identity`: identity memory (the best named match) and when a face is looked
  up (:meth:`~FaceTracker.identity_due`).

Their settings are one :class:`TrackerConfig`.

Example:
    >>> from maskwatch.types import Faces
    >>> tracker = FaceTracker()
    >>> faces = tracker.update(Faces(boxes=[[10, 10, 50, 50]]), frame_index=0, timestamp=0.0)
    >>> faces.track_ids.tolist()
    [1]
    >>> tracker.due(faces, frame_index=0, every=5).tolist()
    [True]
"""

from __future__ import annotations

from ..ops.boxes import iou_matrix
from .config import TrackerConfig
from .track import Track
from .tracker import FaceTracker

__all__ = ["FaceTracker", "Track", "TrackerConfig", "iou_matrix"]
