"""Identity memory: who a track is, from the recognitions reported for its face, and
when its face is looked up again.

A track keeps the name of its best named match, so one poor frame (profile, blur)
cannot rename it and an unknown result never erases a name. A face is looked up when
its track appears, then every ``IDENTIFY_EVERY`` frames once named and every
``IDENTIFY_UNKNOWN_EVERY`` frames while unknown.
"""

from __future__ import annotations

from .track import Track

__all__ = [
    "IDENTIFY_EVERY", "IDENTIFY_UNKNOWN_EVERY", "forget_identity", "identity_due",
    "record_identity",
]

#: Frames between look-ups of a named face: once a second at 30 fps. A named track
#: keeps its name unless a better match renames it, so a further look-up only buys that
#: chance, at the cost of an embedding and a gallery search per face. Nobody ever set another.
IDENTIFY_EVERY = 30
#: Frames between look-ups of a face still unknown. A track's first look-up is on the
#: frame it appears, often a poor one (turning, half in the frame); at 30 frames a
#: person enrolled a moment before could go unnamed for a whole short clip, at 10 the
#: live-stream tests named him every time. A face nobody enrolled costs one embedding
#: per 10 frames. Nobody ever set another.
IDENTIFY_UNKNOWN_EVERY = 10


def identity_due(track: Track, frame_index: int) -> bool:
    """Whether ``track``'s face should be looked up in the gallery at ``frame_index``:
    never looked up (or forgotten), or its last look-up ``IDENTIFY_EVERY`` (named) or
    ``IDENTIFY_UNKNOWN_EVERY`` (unknown) or more frames ago."""
    if track.last_identified < 0:
        return True
    every = IDENTIFY_EVERY if track.identity is not None else IDENTIFY_UNKNOWN_EVERY
    return track.last_identified <= frame_index - every


def record_identity(track: Track, name: str | None, similarity: float, frame_index: int) -> None:
    """Record one recognition of a track's face.

    ``similarity`` and ``last_identified`` always take the latest report. The track's
    ``identity`` is the name from the named report with the highest similarity so far,
    and ``best_similarity`` that similarity (while the track is unknown: the highest
    similarity reported). So one poor frame (profile, blur) cannot rename a track, and
    an unknown result (``name=None``) never erases a name.

    Args:
        track: the face's live track.
        name: the matched person's name, or ``None`` when unknown.
        similarity: similarity of the best gallery match (higher is closer).
        frame_index: the current frame index.
    """
    similarity = float(similarity)
    track.similarity = similarity
    track.last_identified = frame_index
    better = track.best_similarity is None or similarity > track.best_similarity
    if name is not None and (better or track.identity is None):
        track.identity = name
        track.best_similarity = similarity
    elif better and track.identity is None:
        track.best_similarity = similarity


def forget_identity(track: Track) -> None:
    """Drop what ``track`` remembers of who it is, so it is looked up again at once."""
    track.identity = None
    track.similarity = None
    track.best_similarity = None
    track.last_identified = -1
