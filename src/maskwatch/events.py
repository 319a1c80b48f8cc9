"""Events: one face track from its appearance to its end, kept in the gallery's store.

An :class:`Event` says where and when a face was seen (``source``, ``started``,
``ended``), its mask state over its life, who it was (or unknown) and how sure the
recognition was. The engine's tracker hands over ended tracks
(:attr:`~maskwatch.pipeline.FrameResult.ended`, :meth:`~maskwatch.pipeline.Pipeline.finish`);
:func:`events_from_tracks` turns them into events and an :class:`EventRecorder` writes
them to the gallery store in batches, from a background thread, so that a slow or
down store never holds up the engine.

    >>> recorder = EventRecorder(gallery, "camera:0")           # doctest: +SKIP
    >>> result = engine.process(frame)                          # doctest: +SKIP
    >>> recorder.add_tracks(result.ended)                       # doctest: +SKIP
    >>> recorder.close()                                        # doctest: +SKIP

The store side (``add_events``, ``query_events``, ``event_stats``, ``purge_events``,
``event_sources``) is on :class:`~maskwatch.gallery.base.Gallery`. The time of an
event, for filters, ordering, buckets and retention, is when it *ended*.
"""

from __future__ import annotations

import collections
import csv
import logging
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from maskwatch.types import MASK_CLASSES

if TYPE_CHECKING:
    from maskwatch.gallery.base import Gallery
    from maskwatch.tracking import Track

log = logging.getLogger(__name__)

#: ``identity=UNKNOWN`` (or ``""``) in :meth:`Gallery.query_events` selects unknown faces.
#: The angle brackets are forbidden in person names, so no person can be called this.
UNKNOWN = "<unknown>"
#: ``mask_state=UNCLASSIFIED`` selects events whose mask state was never classified.
UNCLASSIFIED = "unclassified"
#: Default retention of events, in days.
DEFAULT_RETENTION_DAYS = 30.0
#: Columns of :func:`events_to_csv`, in order.
CSV_COLUMNS = ("id", "source", "track_id", "started_iso", "ended_iso", "duration_s", "frames", "mask_state",
               "with_mask_frames", "without_mask_frames", "mask_incorrect_frames", "identity", "best_similarity")


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
        mask_state: the dominant stable label over the track's life (the most frames in
            ``mask_frames``), None when it was never classified.
        mask_frames: frames spent in each stable label, keyed by every name in
            ``MASK_CLASSES`` (``Track.mask_counts``).
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
    mask_frames: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MASK_CLASSES, 0))
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
            "mask_frames": {k: int(self.mask_frames.get(k, 0)) for k in MASK_CLASSES},
            "identity": self.identity,
            "best_similarity": None if self.best_similarity is None else float(self.best_similarity),
        }


def new_event_id() -> str:
    return uuid.uuid4().hex


def event_source_name(kind: str, source: str) -> str:
    """The event source for a frame source: ``file:<file name>`` for a video file (no
    folders), ``camera:N`` for a camera, the URL with its password masked for a stream.

    Args:
        kind: ``FrameSource.kind`` (``"video"``, ``"camera"``, ``"url"``, ...).
        source: ``FrameSource.source`` (a path, ``camera:N`` or a masked URL).
    """
    if kind == "video":
        return f"file:{Path(source).name}"
    if kind == "url":
        return re.sub(r"(://[^/@:]*:)[^@/]*@", r"\1***@", source)
    return source


def dominant_mask_state(counts: dict[str, int], last_label: str | None = None) -> str | None:
    """The label with the most frames; on a tie the track's last label if tied, else
    the first in ``MASK_CLASSES`` order; ``last_label`` when no frame was counted."""
    if sum(int(counts.get(k, 0)) for k in MASK_CLASSES) <= 0:
        return last_label if last_label in MASK_CLASSES else None
    best = max(int(counts.get(k, 0)) for k in MASK_CLASSES)
    tied = [k for k in MASK_CLASSES if int(counts.get(k, 0)) == best]
    return last_label if last_label in tied else tied[0]


def events_from_tracks(tracks: Sequence[Track], source: str, *, clock: Callable[[], float] = time.time,
                       min_frames: int = 3, time_origin: float | None = None) -> list[Event]:
    """Events for ended tracks.

    ``Track.first_time``/``last_time`` may be monotonic-clock or video timestamps, so
    they are converted to wall-clock time by anchoring: the latest ``last_time`` of
    the batch is taken to be ``clock()`` at the moment of this call, and every track
    keeps its offset from it and its duration. With ``time_origin`` the timestamps are
    instead seconds after that wall-clock time (a video file: its timestamps count from
    its first frame, and the origin is when its analysis started), so events keep
    their place in the video however fast it is analysed.

    Args:
        tracks: ended tracks (``FrameResult.ended``, ``Pipeline.finish()``).
        source: the events' source, e.g. ``"camera:0"`` (see :class:`Event`).
        clock: wall clock, Unix seconds.
        min_frames: tracks matched in fewer frames are dropped (mostly false detections).
        time_origin: Unix seconds at which timestamp 0 happened (None: anchor at ``clock()``).

    Returns:
        One event per kept track, in the order given.
    """
    kept = [t for t in tracks if int(t.hits) >= min_frames]
    if not kept:
        return []
    now = float(clock())

    def finite(x: float, default: float) -> float:
        x = float(x)
        return x if math.isfinite(x) else default

    lasts = [finite(t.last_time, 0.0) for t in kept]
    anchor = max(lasts)
    out: list[Event] = []
    for t, last in zip(kept, lasts, strict=True):
        ended = float(time_origin) + last if time_origin is not None else now - max(anchor - last, 0.0)
        duration = max(last - finite(t.first_time, last), 0.0)
        counts = {k: int(t.mask_counts.get(k, 0)) for k in MASK_CLASSES}
        sim = t.best_similarity
        out.append(Event(
            id=new_event_id(), source=str(source), track_id=int(t.track_id), started=ended - duration,
            ended=ended, frames=int(t.hits), mask_state=dominant_mask_state(counts, t.mask_label),
            mask_frames=counts, identity=t.identity or None,
            best_similarity=None if sim is None or not math.isfinite(float(sim)) else float(sim),
        ))
    return out


class EventRecorder:
    """Turns ended tracks into events and writes them to the gallery's store.

    Thread-safe. :meth:`add_tracks` only buffers (it never blocks on the store and
    never raises); a background thread writes the buffer every ``flush_every_s``
    seconds, in one transaction per batch. While the store cannot be reached the
    events stay in memory, at most ``max_buffer`` of them (the oldest are dropped
    beyond that), a warning is logged once per outage and writing is retried with
    back-off (up to ``max_backoff_s``). The recorder also deletes events older than
    the retention period, when it starts and then every ``purge_every_s`` seconds.

    Args:
        gallery: the store (not closed by the recorder).
        source: the events' source (see :class:`Event`).
        min_frames: shorter tracks are dropped (see :func:`events_from_tracks`).
        retention_days: events that ended more than this many days ago are deleted;
            None or <= 0 keeps them for ever.
        flush_every_s: seconds between background writes.
        max_buffer: most events kept in memory while the store is down.
        batch_size: most events per write transaction.
        clock: wall clock, Unix seconds.
        time_origin: Unix seconds of timestamp 0 of the tracks (a video file: when its
            analysis started); None: timestamps are anchored at ``clock()`` (live sources).
            See :func:`events_from_tracks`.
        purge_every_s: seconds between retention purges.
        max_backoff_s: longest wait, in seconds, between retries while the store is down.
    """

    def __init__(self, gallery: Gallery, source: str, *, min_frames: int = 3,
                 retention_days: float | None = DEFAULT_RETENTION_DAYS, flush_every_s: float = 2.0,
                 max_buffer: int = 10_000, batch_size: int = 500, clock: Callable[[], float] = time.time,
                 purge_every_s: float = 3600.0, max_backoff_s: float = 30.0,
                 time_origin: float | None = None) -> None:
        if not flush_every_s > 0 or max_buffer < 1 or batch_size < 1 or min_frames < 1:
            raise ValueError("flush_every_s must be > 0, max_buffer, batch_size and min_frames >= 1")
        self.gallery = gallery
        self.source = str(source)
        self.min_frames = int(min_frames)
        self.retention_days = retention_days if retention_days and retention_days > 0 else None
        self.flush_every_s = float(flush_every_s)
        self.max_buffer = int(max_buffer)
        self.batch_size = int(batch_size)
        self.clock = clock
        self.time_origin = time_origin
        self.purge_every_s = float(purge_every_s)
        self.max_backoff_s = float(max_backoff_s)
        #: Events written so far, and dropped because the buffer was full.
        self.written = 0
        self.dropped = 0
        self._buffer: collections.deque[Event] = collections.deque()
        self._lock = threading.Lock()          # guards the buffer and the counters
        self._flush_lock = threading.Lock()    # one write at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._down: str | None = None          # the error message while the store is down
        self._warned_full = False              # the buffer-full warning was logged (this outage)
        self._retry_at = 0.0                   # monotonic time of the next background try
        self._backoff = self.flush_every_s
        self._next_purge = 0.0                 # monotonic; 0 = at the first write
        self._thread = threading.Thread(target=self._run, name=f"maskwatch-events {self.source}", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Events buffered, not written yet."""
        with self._lock:
            return len(self._buffer)

    def add_tracks(self, tracks: Sequence[Track]) -> None:
        """Buffer events for these ended tracks; returns at once, never raises."""
        if not tracks:
            return
        try:
            events = events_from_tracks(tracks, self.source, clock=self.clock, min_frames=self.min_frames,
                                        time_origin=self.time_origin)
        except Exception:  # never into the engine
            log.exception("could not make events from %d tracks of %s", len(tracks), self.source)
            return
        self.add_events(events)

    def add_events(self, events: Iterable[Event]) -> None:
        """Buffer ready-made events (as :meth:`add_tracks`)."""
        events = list(events)
        if not events:
            return
        if self._closed:
            log.warning("%d events of %s arrived after the recorder was closed; not recorded",
                        len(events), self.source)
            return
        with self._lock:
            self._buffer.extend(events)
            over = len(self._buffer) - self.max_buffer
            if over > 0:
                for _ in range(over):
                    self._buffer.popleft()
                if not self._warned_full:
                    self._warned_full = True
                    log.warning("event buffer of %s is full (%d): dropping the oldest events",
                                self.source, self.max_buffer)
                self.dropped += over
            full = len(self._buffer) >= self.batch_size
        if full:
            self._wake.set()

    def flush(self) -> int:
        """Write every buffered event now (in batches); returns how many were written.

        On a store failure it logs, keeps the unwritten events buffered and returns
        the number written before the failure: it does not raise.
        """
        return self._flush(force=True)

    def close(self) -> None:
        """Stop the background thread and write what is left (once more, now).

        Events that still cannot be written are logged as lost. Safe to call twice.
        """
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=60)
        self._flush(force=True)
        left = self.pending
        if left:
            log.warning("%d events of %s could not be recorded: %s", left, self.source, self._down or "store busy")

    def __enter__(self) -> EventRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_every_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self._flush(force=False)
            except Exception:  # a bug must not kill the thread silently
                log.exception("event recorder of %s failed", self.source)

    def _flush(self, force: bool) -> int:
        from maskwatch.gallery.base import GalleryError

        with self._flush_lock:
            if not force and time.monotonic() < self._retry_at:
                return 0
            written = 0
            try:
                while True:
                    with self._lock:
                        batch = [self._buffer[i] for i in range(min(self.batch_size, len(self._buffer)))]
                    if not batch:
                        break
                    self.gallery.add_events(batch)  # idempotent: ids already stored are skipped
                    with self._lock:
                        # the buffer may have lost its oldest entries meanwhile (overflow)
                        ids = {e.id for e in batch}
                        while self._buffer and self._buffer[0].id in ids:
                            self._buffer.popleft()
                        self.written += len(batch)
                    written += len(batch)
                self._purge_if_due()
            except GalleryError as exc:
                if self._down is None:
                    log.warning("events of %s cannot be written (%s); keeping up to %d in memory and retrying",
                                self.source, exc, self.max_buffer)
                self._down = str(exc)
                self._retry_at = time.monotonic() + self._backoff
                self._backoff = min(self._backoff * 2, self.max_backoff_s)
                return written
            if self._down is not None:
                log.info("events of %s are written again (%d buffered events written)", self.source, written)
                self._down = None
                self._warned_full = False
            self._backoff = self.flush_every_s
            self._retry_at = 0.0
            return written

    def _purge_if_due(self) -> None:
        if self.retention_days is None or time.monotonic() < self._next_purge:
            return
        cutoff = float(self.clock()) - self.retention_days * 86400.0
        n = self.gallery.purge_events(cutoff)
        self._next_purge = time.monotonic() + self.purge_every_s
        if n:
            log.info("deleted %d events older than %g days from %s", n, self.retention_days,
                     self.gallery.location)


# ---------------------------------------------------------------------- CSV and times


def _iso(t: float) -> str:
    return datetime.fromtimestamp(float(t), tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _cell(text: str | None) -> str:
    """Text for a CSV cell; a leading ``= + - @`` is quoted with ``'`` so that a
    spreadsheet does not run it as a formula (names and URLs come from users)."""
    if text is None:
        return ""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def events_to_csv(events: Iterable[Event], file: str | os.PathLike[str] | TextIO) -> int:
    """Write events as CSV, one row each, with a header of :data:`CSV_COLUMNS`.

    Times are ISO 8601 in UTC (``2024-05-01T10:00:00.000Z``), ``duration_s`` seconds
    with millisecond precision; unknown identity, unclassified mask state and missing
    similarity are empty cells.

    Args:
        events: any iterable (a generator streams large exports).
        file: a path (written to a temporary name and renamed: no partial file is
            left on failure) or an open text file (opened with ``newline=""``).

    Returns:
        The number of rows written.
    """
    if isinstance(file, (str, os.PathLike)):
        target = Path(file)
        tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
        try:
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                n = events_to_csv(events, f)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return n
    w = csv.writer(file)
    w.writerow(CSV_COLUMNS)
    n = 0
    for e in events:
        w.writerow([
            e.id, _cell(e.source), int(e.track_id), _iso(e.started), _iso(e.ended),
            f"{max(e.ended - e.started, 0.0):.3f}", int(e.frames), e.mask_state or "",
            *(int(e.mask_frames.get(k, 0)) for k in MASK_CLASSES),
            _cell(e.identity), "" if e.best_similarity is None else f"{e.best_similarity:.4f}",
        ])
        n += 1
    return n


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)?\s*$", re.IGNORECASE)
_UNIT_S = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"15m"``, ``"1h"``, ``"7d"`` or ``"2w"``.

    Raises:
        ValueError: with a message that says what is accepted.
    """
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a duration: write e.g. 90s, 15m, 1h, 7d or 2w")
    return float(m.group(1)) * _UNIT_S[m.group(2).lower() if m.group(2) else None]


def parse_time(text: str, *, now: float | None = None) -> float:
    """Unix seconds for a time given on the command line.

    Accepted: a duration ago (``"24h"``, ``"7d"``, see :func:`parse_duration`; a bare
    number counts as Unix seconds when it is above 10^8), an ISO 8601 date or date and
    time (``2024-05-01``, ``2024-05-01T10:30``, ``...Z`` or ``...+02:00``; without a
    zone it is local time), or ``now``.

    Raises:
        ValueError: with a message that says what is accepted.
    """
    s = str(text).strip()
    now = time.time() if now is None else float(now)
    if s.lower() == "now":
        return now
    try:
        value = float(s)
    except ValueError:
        value = None
    if value is not None and math.isfinite(value) and value > 1e8:
        return value
    if _DURATION.match(s) and not (value is not None and value > 1e8):
        return now - parse_duration(s)
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"{text!r} is not a time: write an ISO date such as 2024-05-01 or 2024-05-01T10:30, "
                         "a duration ago such as 24h or 7d, or Unix seconds") from None
    if dt.tzinfo is None:
        dt = dt.astimezone()  # local time
    return dt.timestamp()
