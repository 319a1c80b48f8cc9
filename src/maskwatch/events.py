"""Events: one face track from its appearance to its end, kept in the gallery's store.

An :class:`Event` says where and when a face was seen (``source``, ``started``,
``ended``), its mask state over its life, who it was (or unknown) and how sure the
recognition was. The engine's tracker hands over ended tracks
(:attr:`~maskwatch.pipeline.FrameResult.ended`, :meth:`~maskwatch.pipeline.Pipeline.finish`);
:func:`events_from_tracks` turns them into events and an :class:`EventRecorder` hands
them to an :class:`EventWriter`, which writes them to the gallery store in batches from a
background thread, so that a slow or down store never holds up the engine.

    >>> recorder = EventRecorder(gallery, "camera:0", spool=home / SPOOL_NAME)  # doctest: +SKIP
    >>> result = engine.process(frame)                          # doctest: +SKIP
    >>> recorder.add_tracks(result.ended)                       # doctest: +SKIP
    >>> recorder.close()                                        # doctest: +SKIP

No event is lost to an outage of the store, and none is recorded twice: the writer keeps
what it cannot write (in memory, bounded, retried with back-off; when the process ends,
in a spool file in the data folder, :class:`EventSpool`, written by the next process),
and the store skips event ids it already has. A server shares one writer between all its
streams, so a stream that ends during an outage leaves its events with the writer.

The writer needs of its store only an :class:`EventStore` (``add_events``,
``purge_events``, ``location``), which a :class:`~maskwatch.gallery.base.Gallery` is;
the whole store side (``add_events``, ``query_events``, ``event_stats``,
``purge_events``, ``event_sources``) is on the gallery. This module imports no gallery
module: the record (:class:`Event`, :data:`UNKNOWN`, :data:`UNCLASSIFIED`) is in
:mod:`maskwatch.records` (re-exported here), its checks in :mod:`maskwatch.validation`,
the errors in :mod:`maskwatch.errors`. The time of an event, for filters, ordering,
buckets and retention, is when it *ended*.
"""

from __future__ import annotations

import collections
import csv
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from maskwatch.errors import GalleryError

# The record and its constants live in a leaf module (the stores use them too); they are
# re-exported here, where callers have always imported them.
from maskwatch.records import DEFAULT_RETENTION_DAYS, Event, event_from_dict, new_event_id
from maskwatch.records import UNCLASSIFIED as UNCLASSIFIED
from maskwatch.records import UNKNOWN as UNKNOWN
from maskwatch.types import MASK_CLASSES, SHOWN_MASK_STATES, UNKNOWN_MASK
from maskwatch.validation import check_events

if TYPE_CHECKING:
    from maskwatch.tracking import Track

log = logging.getLogger(__name__)

#: Columns of :func:`events_to_csv`, in order.
CSV_COLUMNS = ("id", "source", "track_id", "started_iso", "ended_iso", "duration_s", "frames",
               "mask_state", "with_mask_frames", "without_mask_frames", "mask_incorrect_frames",
               "identity", "best_similarity", "unknown_frames")


def event_source_name(kind: str, source: str) -> str:
    """The event source for a frame source: ``file:<file name>`` for a file (a video, a
    photo, a folder), ``camera:N`` for a camera, the URL with its password masked for a stream.

    Args:
        kind: ``FrameSource.kind`` (``"video"``, ``"camera"``, ``"url"``, ...).
        source: ``FrameSource.source`` (a path, ``camera:N`` or a masked URL).
    """
    if kind in ("video", "image", "folder"):
        return f"file:{Path(source).name}"
    if kind == "url":
        return re.sub(r"(://[^/@:]*:)[^@/]*@", r"\1***@", source)
    return source


def dominant_mask_state(counts: dict[str, int], last_label: str | None = None) -> str | None:
    """The state shown on the most frames, ``unknown`` (the face could not be judged)
    included; on a tie the track's last label if tied, else the first in
    ``SHOWN_MASK_STATES`` order (a judged state before ``unknown``); ``last_label`` when
    no frame was counted."""
    if sum(int(counts.get(k, 0)) for k in SHOWN_MASK_STATES) <= 0:
        return last_label if last_label in SHOWN_MASK_STATES else None
    best = max(int(counts.get(k, 0)) for k in SHOWN_MASK_STATES)
    tied = [k for k in SHOWN_MASK_STATES if int(counts.get(k, 0)) == best]
    return last_label if last_label in tied else tied[0]


def events_from_tracks(tracks: Sequence[Track], source: str, *,
                       clock: Callable[[], float] = time.time, min_frames: int = 3,
                       time_origin: float | None = None) -> list[Event]:
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
        ended = (float(time_origin) + last if time_origin is not None
                 else now - max(anchor - last, 0.0))
        duration = max(last - finite(t.first_time, last), 0.0)
        shown = {k: int(t.mask_counts.get(k, 0)) for k in SHOWN_MASK_STATES}
        sim = t.best_similarity
        out.append(Event(
            id=new_event_id(), source=str(source), track_id=int(t.track_id),
            started=ended - duration, ended=ended, frames=int(t.hits),
            mask_state=dominant_mask_state(shown, t.mask_label),
            mask_frames=shown,
            identity=t.identity or None,
            best_similarity=None if sim is None or not math.isfinite(float(sim)) else float(sim),
        ))
    return out


# ---------------------------------------------------------------------- the store


class EventStore(Protocol):
    """What the event writer needs of a store; a :class:`~maskwatch.gallery.base.Gallery`
    (SQLite or MongoDB) is one.

    Both calls raise :class:`~maskwatch.errors.GalleryError` (or its
    :class:`~maskwatch.errors.GalleryUnavailable`) when the store cannot do them; the
    writer then keeps the events and tries again. A store that is a file may also have
    a ``path`` (see :func:`store_key`).

    Attributes:
        location: where the store is, for messages (a file path, or a URL with the
            password masked).
    """

    location: str

    def add_events(self, events: Sequence[Event]) -> int:
        """Store events in one transaction, skipping ids already stored; the number stored."""
        ...

    def purge_events(self, older_than: float) -> int:
        """Delete events that ended before ``older_than`` (Unix seconds); the number deleted."""
        ...



# ---------------------------------------------------------------------- the spool


#: File name of the spool in the data folder: events a process could not write before it
#: ended, written to their store by the next process that records events there.
SPOOL_NAME = "pending-events.jsonl"
#: Version of a spool line, ``{"v": 1, "store": KEY, "event": {...}}``.
SPOOL_VERSION = 1
#: Most events one spool file holds; beyond it the oldest are dropped (and counted).
MAX_SPOOL_EVENTS = 100_000
#: Most bytes of a spool file that are read (an event takes about 400).
MAX_SPOOL_BYTES = 64 * 2**20


def store_key(gallery: EventStore) -> str:
    """Which store an event is for, as the spool names it: ``sqlite:`` and the real path
    of a gallery file, else the store's location (a URL with its password masked)."""
    path = getattr(gallery, "path", None)
    if path is not None:
        return "sqlite:" + os.path.realpath(os.fspath(path))
    return str(gallery.location)


class EventSpool:
    """Events kept on disk because their store could not be reached when a process ended.

    One JSON-lines file (:data:`SPOOL_NAME` in the data folder) shared by every process
    and store that use the folder: each line is ``{"v": 1, "store": KEY, "event": {...}}``
    where KEY is :func:`store_key` of the event's store, so that an event is only ever
    written to its own store. Every change reads the file and writes it whole to a
    temporary file (mode 0600: events name people) that is fsynced and renamed over it,
    under an exclusive ``flock`` of the folder, so that a crash leaves the old or the new
    file, never a part, and two processes never lose each other's lines. The file is
    removed when no event is left in it. Lines that are not JSON are dropped (with a
    warning) at the next change; lines of other versions or stores are kept as they are.

    Args:
        path: the spool file (its folder is created, mode 0700).
        max_events: most events kept; beyond it the oldest are dropped, with a warning.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_events: int = MAX_SPOOL_EVENTS) -> None:
        self.path = Path(path).expanduser()
        self.max_events = int(max_events)

    def __repr__(self) -> str:
        return f"EventSpool({str(self.path)!r})"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock on the spool's folder (between processes), where flock exists."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: one process at a time is assumed
            yield
            return
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _read(self) -> tuple[list[dict[str, Any]], int]:
        """The file's lines that are JSON objects, and the number of other lines."""
        try:
            with open(self.path, "rb") as f:
                data = f.read(MAX_SPOOL_BYTES + 1)
        except FileNotFoundError:
            return [], 0
        if len(data) > MAX_SPOOL_BYTES:
            log.warning("%s is larger than %d MiB; only its first part is read", self.path,
                        MAX_SPOOL_BYTES >> 20)
            data = data[:data.rfind(b"\n", 0, MAX_SPOOL_BYTES) + 1]
        rows: list[dict[str, Any]] = []
        bad = 0
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad += 1
        return rows, bad

    def _write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            self.path.unlink(missing_ok=True)
        else:
            tmp = self.path.with_name(
                f".{self.path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
            tmp.unlink(missing_ok=True)  # left by a crash of a process that had this pid
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    for row in rows:
                        f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        try:  # make the rename (or the removal) itself durable
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:  # pragma: no cover - e.g. Windows
            return
        try:
            os.fsync(dir_fd)
        except OSError:  # pragma: no cover - not supported by every file system
            pass
        finally:
            os.close(dir_fd)

    @staticmethod
    def _ours(row: dict[str, Any], key: str) -> bool:
        return (row.get("v") == SPOOL_VERSION and row.get("store") == key
                and isinstance(row.get("event"), dict))

    def load(self, key: str) -> list[Event]:
        """The events kept for the store ``key``, oldest first (malformed ones left out)."""
        if not self.path.exists():
            return []
        with self._locked():
            rows, _ = self._read()
        out: list[Event] = []
        for row in rows:
            if self._ours(row, key):
                try:
                    out.append(event_from_dict(row["event"]))
                except (KeyError, TypeError, ValueError) as exc:
                    log.warning("%s: a malformed event is skipped (%s)", self.path, exc)
        return out

    def add(self, key: str, events: Sequence[Event]) -> int:
        """Keep these events for the store ``key`` (ids already kept are not added twice).

        Returns:
            The number of events dropped to stay within ``max_events`` (oldest first).
        """
        with self._locked():
            rows, bad = self._read()
            have = {row["event"].get("id") for row in rows if self._ours(row, key)}
            rows += [{"v": SPOOL_VERSION, "store": key, "event": e.to_dict()}
                     for e in events if e.id not in have]
            over = max(len(rows) - self.max_events, 0)
            if over:
                log.warning("%s holds more than %d events: the %d oldest are dropped", self.path,
                            self.max_events, over)
            if bad:
                log.warning("%s: %d lines that are not JSON are dropped", self.path, bad)
            self._write(rows[over:])
        return over

    def remove(self, key: str, ids: Iterable[str]) -> int:
        """Forget these events of the store ``key`` (they are written); the file is
        removed when nothing is left in it.

        Returns:
            The number of events still kept for ``key``.
        """
        ids = set(ids)
        if not self.path.exists():
            return 0
        if not ids:
            return len(self.load(key))
        with self._locked():
            rows, bad = self._read()
            keep = [row for row in rows
                    if not (self._ours(row, key) and row["event"].get("id") in ids)]
            if len(keep) != len(rows) or bad:
                self._write(keep)
            return sum(1 for row in keep if self._ours(row, key))


# ---------------------------------------------------------------------- writing events


class EventWriter:
    """Writes events to the gallery's store from a background thread; keeps what it cannot.

    Thread-safe. :meth:`add_events` only buffers (it never blocks on the store and
    never raises); the thread writes the buffer every ``flush_every_s`` seconds, in one
    transaction per batch. While the store cannot be reached (down, locked, read-only,
    its file deleted) the events stay in memory, at most ``max_buffer`` of them (the
    oldest are dropped beyond that and counted in :attr:`dropped`), a warning is logged
    once per outage and writing is retried with back-off (up to ``max_backoff_s``).

    With a ``spool`` nothing is lost when the process ends during an outage: :meth:`close`
    (which a server calls at SIGTERM) keeps the events it still cannot write in the
    spool file (see :class:`EventSpool`), and a writer for the same store started later
    reads them from there in its thread (so a store still down does not delay the
    start), writes them and then removes them from the file. Nothing is recorded twice:
    event ids are stable and the store skips ids it already has, so a write that
    succeeded although it reported a failure (a timeout after the commit), or a crash
    between the write and the removal from the spool, only writes the same events again,
    which stores nothing new.

    One writer can serve many :class:`EventRecorder` (a server: one per live stream);
    events handed over by a recorder that is closed stay here until written.

    Args:
        gallery: the store, an :class:`EventStore` such as a gallery (not closed by the writer).
        name: for log messages (a source, or ``"events"``).
        spool: the spool file (e.g. ``<data folder>/pending-events.jsonl``); None: events
            still unwritten at :meth:`close` are lost (logged).
        retention_days: events that ended more than this many days ago are deleted when
            the writer starts and then every ``purge_every_s`` seconds; None or <= 0: never.
        flush_every_s: seconds between background writes.
        max_buffer: most events kept in memory while the store is down.
        batch_size: most events per write transaction.
        clock: wall clock, Unix seconds (for retention).
        purge_every_s: seconds between retention purges.
        max_backoff_s: longest wait, in seconds, between retries while the store is down.
    """

    def __init__(self, gallery: EventStore, *, name: str = "events",
                 spool: str | os.PathLike[str] | None = None,
                 retention_days: float | None = DEFAULT_RETENTION_DAYS, flush_every_s: float = 2.0,
                 max_buffer: int = 10_000, batch_size: int = 500,
                 clock: Callable[[], float] = time.time,
                 purge_every_s: float = 3600.0, max_backoff_s: float = 30.0) -> None:
        if not flush_every_s > 0 or max_buffer < 1 or batch_size < 1:
            raise ValueError("flush_every_s must be > 0, max_buffer and batch_size >= 1")
        self.gallery = gallery
        self.name = str(name)
        self.spool = EventSpool(spool) if spool is not None else None
        self.retention_days = retention_days if retention_days and retention_days > 0 else None
        self.flush_every_s = float(flush_every_s)
        self.max_buffer = int(max_buffer)
        self.batch_size = int(batch_size)
        self.clock = clock
        self.purge_every_s = float(purge_every_s)
        self.max_backoff_s = float(max_backoff_s)
        #: Events written so far; dropped because the buffer (or the spool) was full;
        #: kept in the spool at close; lost at close (no spool, or it could not be written).
        self.written = 0
        self.dropped = 0
        self.spooled = 0
        self.lost = 0
        self._key = store_key(gallery)
        self._buffer: collections.deque[Event] = collections.deque()
        self._lock = threading.Lock()          # guards the buffer, the counters and _from_spool
        self._flush_lock = threading.Lock()    # one write (or spool read) at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._down: str | None = None          # the error message while the store is down
        self._warned_full = False              # the buffer-full warning was logged (this outage)
        self._retry_at = 0.0                   # monotonic time of the next background try
        self._backoff = self.flush_every_s
        self._next_purge = 0.0                 # monotonic; 0 = at the first write
        self._from_spool: set[str] = set()     # buffered events that are also in the spool file
        self._spool_more = self.spool is not None  # the file may hold events not loaded yet
        self._thread = threading.Thread(target=self._run, name=f"maskwatch-events {self.name}",
                                        daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Events buffered, not written yet."""
        with self._lock:
            return len(self._buffer)

    def add_events(self, events: Iterable[Event]) -> None:
        """Buffer events; returns at once, never raises (a malformed event is logged and
        left out)."""
        events = list(events)
        if not events:
            return
        if self._closed:
            log.warning("%d events of %s arrived after the recorder was closed; not recorded",
                        len(events), self.name)
            return
        good: list[Event] = []
        for e in events:
            try:
                good += check_events([e])
            except GalleryError as exc:  # a bug upstream: the store would refuse it for ever
                log.error("%s: an event is not recorded: %s", self.name, exc)
        with self._lock:
            self._buffer.extend(good)
            self._trim()
            full = len(self._buffer) >= self.batch_size
        if full:
            self._wake.set()

    def _trim(self) -> None:
        """Drop the oldest events beyond ``max_buffer`` (with ``_lock`` held). Those that
        are also in the spool file stay there (read again later), the others are counted."""
        over = len(self._buffer) - self.max_buffer
        if over <= 0:
            return
        lost = 0
        for _ in range(over):
            e = self._buffer.popleft()
            if e.id in self._from_spool:
                self._from_spool.discard(e.id)
                self._spool_more = True
            else:
                lost += 1
        if lost and not self._warned_full:
            self._warned_full = True
            log.warning("event buffer of %s is full (%d): dropping the oldest events", self.name,
                        self.max_buffer)
        self.dropped += lost

    def wake(self) -> None:
        """Ask the thread to write soon (e.g. when a stream ends); returns at once."""
        self._wake.set()

    def flush(self) -> int:
        """Write every buffered event now (in batches); returns how many were written.

        On a store failure it logs, keeps the unwritten events buffered and returns
        the number written before the failure: it does not raise.
        """
        return self._flush(force=True)

    def close(self) -> None:
        """Stop the thread, write what is left (once more, now) and keep in the spool
        what still cannot be written (without a spool: logged as lost). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=60)
        self._flush(force=True)
        with self._lock:
            left = list(self._buffer)
            self._buffer.clear()
        if not left:
            return
        why = self._down or "store busy"
        if self.spool is None:
            self.lost += len(left)
            log.warning("%d events of %s could not be recorded: %s", len(left), self.name, why)
            return
        try:
            dropped = self.spool.add(self._key, left)
        except OSError as exc:
            self.lost += len(left)
            log.error("%d events of %s could not be recorded (%s) nor kept in %s: %s", len(left),
                      self.name, why, self.spool.path, exc.strerror or exc)
            return
        self.dropped += dropped
        self.spooled = len(left) - dropped
        log.warning("%d events of %s could not be written (%s); they are kept in %s and written "
                    "to the store when maskwatch next records events there", self.spooled,
                    self.name, why, self.spool.path)

    # ------------------------------------------------------------------ internals

    def _run(self) -> None:
        try:
            if self._load_spool():
                self._flush(force=False)
        except Exception:  # a bug must not kill the thread silently
            log.exception("event writer of %s failed", self.name)
        while not self._stop.is_set():
            self._wake.wait(self.flush_every_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self._flush(force=False)
                if self._spool_more and self._down is None and self._load_spool():
                    self._flush(force=False)
            except Exception:  # a bug must not kill the thread silently
                log.exception("event writer of %s failed", self.name)

    def _load_spool(self) -> int:
        """Buffer the spool's events for this store (as many as there is room for);
        returns how many."""
        if self.spool is None or not self._spool_more:
            return 0
        with self._flush_lock:
            with self._lock:
                room = self.max_buffer - len(self._buffer)
                known = self._from_spool | {e.id for e in self._buffer}
            if room <= 0:
                return 0
            try:
                kept = self.spool.load(self._key)
            except OSError as exc:
                log.warning("cannot read the events kept in %s: %s", self.spool.path,
                            exc.strerror or exc)
                self._spool_more = False
                return 0
            fresh, bad = [], []
            for e in kept:
                if e.id in known:
                    continue
                try:
                    fresh += check_events([e])
                except GalleryError as exc:
                    log.warning("%s: a malformed event is dropped: %s", self.spool.path, exc)
                    bad.append(e.id)
            if bad:
                try:
                    self.spool.remove(self._key, bad)
                except OSError:
                    pass
            take = fresh[:room]
            with self._lock:
                self._spool_more = len(fresh) > room
                self._buffer.extendleft(reversed(take))  # older than anything recorded now
                self._from_spool.update(e.id for e in take)
            if take:
                log.info("%d events kept in %s by an earlier run are written to %s", len(take),
                         self.spool.path, self.gallery.location)
            return len(take)

    def _flush(self, force: bool) -> int:
        with self._flush_lock:
            if not force and time.monotonic() < self._retry_at:
                return 0
            written = 0
            unspooled: list[str] = []  # written events that the spool file holds too
            try:
                while True:
                    with self._lock:
                        batch = [self._buffer[i]
                                 for i in range(min(self.batch_size, len(self._buffer)))]
                    if not batch:
                        break
                    self.gallery.add_events(batch)  # idempotent: ids already stored are skipped
                    with self._lock:
                        # the buffer may have lost its oldest entries meanwhile (overflow)
                        ids = {e.id for e in batch}
                        while self._buffer and self._buffer[0].id in ids:
                            self._buffer.popleft()
                        self.written += len(batch)
                        unspooled += [i for i in ids if i in self._from_spool]
                        self._from_spool.difference_update(ids)
                    written += len(batch)
                self._purge_if_due()
            except GalleryError as exc:
                if self._down is None:
                    log.warning("events of %s cannot be written (%s); keeping up to %d in memory "
                                "and retrying", self.name, exc, self.max_buffer)
                self._down = str(exc)
                self._retry_at = time.monotonic() + self._backoff
                self._backoff = min(self._backoff * 2, self.max_backoff_s)
                return written
            finally:
                self._unspool(unspooled)
            if self._down is not None:
                log.info("events of %s are written again (%d buffered events written)", self.name,
                         written)
                self._down = None
                self._warned_full = False
            self._backoff = self.flush_every_s
            self._retry_at = 0.0
            return written

    def _unspool(self, ids: list[str]) -> None:
        """Remove written events from the spool file (a failure only means that they
        are written again, which stores nothing twice)."""
        if not ids or self.spool is None:
            return
        try:
            left = self.spool.remove(self._key, ids)
        except OSError as exc:
            log.warning("could not remove %d written events from %s: %s", len(ids), self.spool.path,
                        exc.strerror or exc)
            return
        if left:
            self._spool_more = True
        elif not self.spool.path.exists():
            log.info("every event kept in %s is written; the file is removed", self.spool.path)

    def _purge_if_due(self) -> None:
        if self.retention_days is None or time.monotonic() < self._next_purge:
            return
        cutoff = float(self.clock()) - self.retention_days * 86400.0
        n = self.gallery.purge_events(cutoff)
        self._next_purge = time.monotonic() + self.purge_every_s
        if n:
            log.info("deleted %d events older than %g days from %s", n, self.retention_days,
                     self.gallery.location)


class EventRecorder:
    """Turns one source's ended tracks into events and hands them to an :class:`EventWriter`.

    Thread-safe; :meth:`add_tracks` never blocks on the store and never raises. Without
    a ``writer`` the recorder has its own (made with the arguments below) and
    :meth:`close` closes it: one last write, then the spool (or, without one, the
    events still unwritten are logged as lost). With a shared ``writer`` (a server's,
    one for all its streams) :meth:`close` only asks it to write soon: the events stay
    in the writer until they are written, however long the store is down.

    Args:
        gallery: the store, an :class:`EventStore` such as a gallery (not closed by the recorder).
        source: the events' source (see :class:`Event`).
        min_frames: shorter tracks are dropped (see :func:`events_from_tracks`).
        retention_days, flush_every_s, max_buffer, batch_size, purge_every_s,
            max_backoff_s, spool: for the recorder's own writer (see :class:`EventWriter`);
            ignored with a shared ``writer``.
        clock: wall clock, Unix seconds.
        time_origin: Unix seconds of timestamp 0 of the tracks (a video file: when its
            analysis started); None: timestamps are anchored at ``clock()`` (live sources).
            See :func:`events_from_tracks`.
        writer: a shared writer; None: the recorder makes its own.
    """

    def __init__(self, gallery: EventStore, source: str, *, min_frames: int = 3,
                 retention_days: float | None = DEFAULT_RETENTION_DAYS, flush_every_s: float = 2.0,
                 max_buffer: int = 10_000, batch_size: int = 500,
                 clock: Callable[[], float] = time.time,
                 purge_every_s: float = 3600.0, max_backoff_s: float = 30.0,
                 time_origin: float | None = None, writer: EventWriter | None = None,
                 spool: str | os.PathLike[str] | None = None) -> None:
        if min_frames < 1:
            raise ValueError("min_frames must be >= 1")
        self.gallery = gallery
        self.source = str(source)
        self.min_frames = int(min_frames)
        self.clock = clock
        self.time_origin = time_origin
        self._owns = writer is None
        self.writer = writer if writer is not None else EventWriter(
            gallery, name=self.source, spool=spool, retention_days=retention_days,
            flush_every_s=flush_every_s, max_buffer=max_buffer, batch_size=batch_size, clock=clock,
            purge_every_s=purge_every_s, max_backoff_s=max_backoff_s)
        self._closed = False

    # The writer's counters (with a shared writer: of every recorder that uses it).
    @property
    def pending(self) -> int:
        """Events buffered, not written yet."""
        return self.writer.pending

    @property
    def written(self) -> int:
        return self.writer.written

    @property
    def dropped(self) -> int:
        return self.writer.dropped

    @property
    def spooled(self) -> int:
        """Events kept in the spool file at close (see :class:`EventWriter`)."""
        return self.writer.spooled

    @property
    def lost(self) -> int:
        return self.writer.lost

    def add_tracks(self, tracks: Sequence[Track]) -> None:
        """Buffer events for these ended tracks; returns at once, never raises."""
        if not tracks:
            return
        try:
            events = events_from_tracks(tracks, self.source, clock=self.clock,
                                        min_frames=self.min_frames, time_origin=self.time_origin)
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
        self.writer.add_events(events)

    def flush(self) -> int:
        """Write every buffered event of the writer now; see :meth:`EventWriter.flush`."""
        return self.writer.flush()

    def close(self) -> None:
        """No more events from this recorder. Its own writer is closed (a last write, then
        the spool); a shared one is asked to write soon and keeps the events. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._owns:
            self.writer.close()
        else:
            self.writer.wake()

    def __enter__(self) -> EventRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------- CSV and times


def _iso(t: float) -> str:
    iso = datetime.fromtimestamp(float(t), tz=UTC).isoformat(timespec="milliseconds")
    return iso.replace("+00:00", "Z")


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
            int(e.mask_frames.get(UNKNOWN_MASK, 0)),
        ])
        n += 1
    return n


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)?\s*$", re.IGNORECASE)
_UNIT_S = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0,
           "w": 604800.0}


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
        raise ValueError(f"{text!r} is not a time: write an ISO date such as 2024-05-01 or "
                         "2024-05-01T10:30, a duration ago such as 24h or 7d, "
                         "or Unix seconds") from None
    if dt.tzinfo is None:
        dt = dt.astimezone()  # local time
    return dt.timestamp()
