"""The event record and its constants; imports only :mod:`maskwatch.types` and
:mod:`maskwatch.config`.

An :class:`Event` is one face track from its appearance to its end. The stores
(:mod:`maskwatch.gallery`) keep events and the event writer (:mod:`maskwatch.events`)
makes and hands them over; both depend on this module, never on each other. Checks of
an event's values are in :func:`maskwatch.validation.check_events`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from maskwatch.config import DEFAULT_RETENTION_DAYS as DEFAULT_RETENTION_DAYS  # re-exported
from maskwatch.types import SHOWN_MASK_STATES

#: ``identity=UNKNOWN`` (or ``""``) in :meth:`Gallery.query_events` selects unknown faces.
#: The angle brackets are forbidden in person names, so no person can be called this.
UNKNOWN = "<unknown>"
#: ``mask_state=UNCLASSIFIED`` selects events whose mask state was never classified.
UNCLASSIFIED = "unclassified"


@dataclass
class Event:
    """One face track from its appearance to its end.

    Attributes:
        id: uuid4 hex (32 characters), unique in the store.
        source: where it was seen, e.g. ``"browser:<client-id>"``, ``"camera:0"``,
            ``"file:clip.mp4"``, or an RTSP URL with its password masked.
        track_id: the tracker's id (unique within one run of the engine only).
        started, ended: Unix seconds (UTC wall clock) of the first and last matched frame.
        frames: matched frames (``Track.hits``).
        mask_state: the state shown on most of the track's frames: a stable label, or
            ``unknown`` (:data:`~maskwatch.types.UNKNOWN_MASK`) when the face was shown
            as cannot judge on most of them (the quality rule, or a contested track:
            left out of compliance, counted apart); None when it was never classified.
        mask_frames: frames spent in each shown state, keyed by every name in
            ``SHOWN_MASK_STATES`` (``Track.mask_counts``): the three labels and
            ``unknown`` (frames shown as cannot judge). Frames before the
            first classification are in none, so the counts may sum to less than
            ``frames``.
        identity: the person's name, None when unknown.
        best_similarity: cosine similarity of the match behind ``identity`` (while
            unknown: the highest one seen), None when recognition never ran.
    """

    id: str
    source: str
    track_id: int
    started: float
    ended: float
    frames: int
    mask_state: str | None
    mask_frames: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(SHOWN_MASK_STATES, 0))
    identity: str | None = None
    best_similarity: float | None = None

    @property
    def duration(self) -> float:
        """Seconds between the first and the last matched frame."""
        return self.ended - self.started

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: every attribute, plus ``duration_s``."""
        return {
            "id": self.id, "source": self.source, "track_id": int(self.track_id),
            "started": float(self.started), "ended": float(self.ended),
            "duration_s": round(float(self.duration), 3), "frames": int(self.frames),
            "mask_state": self.mask_state,
            "mask_frames": {k: int(self.mask_frames.get(k, 0)) for k in SHOWN_MASK_STATES},
            "identity": self.identity,
            "best_similarity": (None if self.best_similarity is None
                                else float(self.best_similarity)),
        }


def new_event_id() -> str:
    return uuid.uuid4().hex


def event_from_dict(d: dict[str, Any]) -> Event:
    """The event of :meth:`Event.to_dict` (a spool line's ``event``).

    Raises:
        KeyError, TypeError, ValueError: a malformed dict (validate the result with
            :func:`~maskwatch.validation.check_events` before storing it).
    """
    frames = d.get("mask_frames") or {}
    if not isinstance(frames, dict):
        raise TypeError("mask_frames is not an object")
    sim = d.get("best_similarity")
    return Event(id=str(d["id"]), source=str(d["source"]), track_id=int(d["track_id"]),
                 started=float(d["started"]), ended=float(d["ended"]), frames=int(d["frames"]),
                 mask_state=d.get("mask_state"),
                 mask_frames={k: int(frames.get(k, 0)) for k in SHOWN_MASK_STATES},
                 identity=d.get("identity"), best_similarity=None if sim is None else float(sim))
