"""The gallery interface: people, their face templates, and search over them.

A *person* is a unique name with an optional face thumbnail. A *template* is one
face embedding of that person, tagged with the embedder that made it (name and
version), whether the face was masked, and whether the mask was synthetic (drawn at
enrolment). Photos are never stored; a thumbnail only when the caller asks.

:class:`Gallery` holds the checks and the caching that every store shares (name
validation and event checks from :mod:`maskwatch.validation`, embedder separation, the
matcher cache, export and import); a store
(:mod:`~maskwatch.gallery.sqlite`, :mod:`~maskwatch.gallery.mongo`) implements a few
primitives, each of which is atomic: either all of it is written or none of it.

Every write to people or templates bumps a change stamp kept *in the store*, so a
second process (the web app beside the engine) that writes to the same gallery is
noticed by the first one's cached matcher.

The same store keeps *events* (:class:`~maskwatch.records.Event`: one face track
from appearance to end) in their own table or collection, indexed by end time,
source, person and mask state. Events point at their person by id, so a rename
shows in them at once and a removal deletes them with the person; event writes do
not bump the change stamp (they do not change what the matcher sees).

This module imports only leaves (:mod:`maskwatch.records`, :mod:`maskwatch.errors`,
:mod:`maskwatch.validation`, :mod:`maskwatch.types`, :mod:`maskwatch.recognition`):
the event writer (:mod:`maskwatch.events`) depends on a store, never the reverse.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import re
import threading
import time
import uuid
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# The error family, the event record and the checks live in leaf modules; the names
# that callers have imported from here are re-exported.
from maskwatch.errors import GalleryError, PersonExists, PersonNotFound
from maskwatch.errors import GalleryUnavailable as GalleryUnavailable
from maskwatch.errors import InvalidName as InvalidName
from maskwatch.recognition import EmbeddingMatcher
from maskwatch.records import UNCLASSIFIED, UNKNOWN, Event
from maskwatch.types import MASK_CLASSES
from maskwatch.validation import MAX_NAME_CHARS as MAX_NAME_CHARS
from maskwatch.validation import MAX_SOURCE_CHARS as MAX_SOURCE_CHARS
from maskwatch.validation import check_events, validate_name

log = logging.getLogger(__name__)

#: Export file format tag and version (first line of an export).
EXPORT_FORMAT = "maskwatch-gallery"
EXPORT_VERSION = 1
#: How to re-enrol, quoted in messages about templates of another embedder.
REENROL_HINT = "re-enrol them with `maskwatch people add NAME PHOTO...`"
#: Largest page of :meth:`Gallery.query_events`.
MAX_EVENTS_PAGE = 1000
#: Most non-empty buckets :meth:`Gallery.event_stats` returns (else it asks for larger buckets).
MAX_BUCKETS = 10_000


@dataclass(frozen=True)
class Person:
    """One enrolled person.

    Attributes:
        person_id: store-wide unique id (32 hex characters), stable across renames.
        name: unique display name (validated by :func:`~maskwatch.validation.validate_name`).
        created: enrolment time, seconds since the Unix epoch.
        templates: number of templates, synthetic ones included.
        synthetic_templates: how many of those were drawn with a synthetic mask.
        thumbnail: JPEG bytes of a small face crop, or None (the default: no photo
            is kept unless the user asks).
    """

    person_id: str
    name: str
    created: float
    templates: int = 0
    synthetic_templates: int = 0
    thumbnail: bytes | None = None


@dataclass(frozen=True)
class Template:
    """One face embedding of a person.

    Attributes:
        person_id: the owner's id; ignored when writing (the name given to the write
            decides the owner), filled when reading.
        embedding: (D,) float32 embedding, for SFace unit length, D = 128.
        embedder: name of the embedder that made it, e.g. ``"sface-2021dec-int8"``.
        embedder_version: its version string; templates only match probes of the
            same (embedder, embedder_version).
        masked: the face wears a mask (real or synthetic).
        synthetic: the mask was drawn at enrolment (:func:`~maskwatch.ops.synthmask.render_mask`).
        source: where it came from, e.g. the photo's file name (no directories).
    """

    person_id: str
    embedding: np.ndarray
    embedder: str
    embedder_version: str
    masked: bool = False
    synthetic: bool = False
    source: str = ""


@dataclass(frozen=True)
class PersonRecord:
    """A person and all their templates, as exported, imported and written at once."""

    person: Person
    templates: list[Template] = field(default_factory=list)


def new_person_id() -> str:
    return uuid.uuid4().hex


def mask_url_password(url: str) -> str:
    """``scheme://user:***@host/...``: a URL fit for messages and logs."""
    return re.sub(r"(://[^/@:]*:)[^@/]*@", r"\1***@", url)


def check_templates(templates: Iterable[Template]) -> list[Template]:
    """Templates with float32 (D,) embeddings; :class:`GalleryError` for bad ones.

    Refused: non-finite or all-zero embeddings, empty embedder names, and templates
    of one embedder with different dimensions.
    """
    out: list[Template] = []
    dims: dict[tuple[str, str], int] = {}
    for t in templates:
        if not isinstance(t, Template):
            raise GalleryError(f"expected a Template, got {type(t).__name__}")
        emb = np.ascontiguousarray(np.asarray(t.embedding, dtype=np.float32).reshape(-1))
        if emb.size == 0 or not np.all(np.isfinite(emb)) or not np.any(emb):
            raise GalleryError("a template embedding must be a non-zero vector of finite numbers")
        if not t.embedder or not isinstance(t.embedder, str) or not isinstance(t.embedder_version, str):
            raise GalleryError("every template must name its embedder and embedder version")
        key = (t.embedder, t.embedder_version)
        if dims.setdefault(key, emb.size) != emb.size:
            raise GalleryError(f"templates of {key[0]} v{key[1]} have different dimensions ({dims[key]} and {emb.size})")
        out.append(Template(t.person_id, emb, t.embedder, str(t.embedder_version), bool(t.masked),
                            bool(t.synthetic), str(t.source)[:500]))
    return out


@dataclass(frozen=True)
class EventFilter:
    """Which events a query selects (all fields validated by :meth:`Gallery.query_events`).

    Attributes:
        since, until: ``since <= ended < until`` in Unix seconds; None: open.
        source: exact source text; None: any.
        identity: a person's name; None: anyone (see ``unknown``).
        unknown: only unknown faces (``identity`` is then None).
        mask_state: one of ``MASK_CLASSES``; None: any (see ``unclassified``).
        unclassified: only events never classified (``mask_state`` is then None).
    """

    since: float | None = None
    until: float | None = None
    source: str | None = None
    identity: str | None = None
    unknown: bool = False
    mask_state: str | None = None
    unclassified: bool = False


def _event_time(value: object, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise GalleryError(f"{what} must be a time in Unix seconds, got {value!r}")
    return float(value)


def event_filter(*, since: object = None, until: object = None, source: object = None,
                 identity: object = None, mask_state: object = None) -> EventFilter:
    """A validated :class:`EventFilter`; :class:`GalleryError` (or InvalidName) for bad values."""
    lo, hi = _event_time(since, "since"), _event_time(until, "until")
    if source is not None and not isinstance(source, str):
        raise GalleryError(f"source must be text, got {type(source).__name__}")
    name, unknown = None, False
    if identity is not None:
        if identity in ("", UNKNOWN):
            unknown = True
        else:
            name = validate_name(identity, existing=True)
    state, unclassified = None, False
    if mask_state is not None:
        if mask_state in ("", UNCLASSIFIED):
            unclassified = True
        elif mask_state in MASK_CLASSES:
            state = str(mask_state)
        else:
            raise GalleryError(f"unknown mask state {mask_state!r}: use one of "
                               f"{', '.join(MASK_CLASSES)} or {UNCLASSIFIED}")
    return EventFilter(lo, hi, source, name, unknown, state, unclassified)


class Gallery(ABC):
    """People and their face templates in one store.

    Safe to share between threads; several processes may open the same store. Methods
    raise :class:`GalleryError` subclasses with one clear sentence:
    :class:`InvalidName`, :class:`PersonExists`, :class:`PersonNotFound`, and
    :class:`GalleryUnavailable` when the store cannot be reached. A failed write
    leaves the store as it was.

    Attributes:
        location: where the store is, for messages (a file path, or a URL with the
            password masked).
    """

    location: str = ""

    #: After a failed look-up of the change stamp, :meth:`matcher` does not ask the
    #: store again for this long (seconds), so that a down server costs the engine
    #: one timeout, not one per frame.
    retry_after_s: float = 10.0

    def __init__(self) -> None:
        self._cache_lock = threading.Lock()
        # (embedder, version, threshold, masked_threshold) -> (stamp, matcher)
        self._matchers: dict[tuple[str, str, float, float], tuple[int, EmbeddingMatcher]] = {}
        self._stamp_seen: tuple[int, float] | None = None  # (stamp, monotonic time read)
        self._down: tuple[float, GalleryError] | None = None  # (monotonic time to retry, the error)

    # ------------------------------------------------------------------ primitives
    # Each is atomic. Names given to them are already validated.

    @abstractmethod
    def _write_people(self, records: Sequence[PersonRecord], replace: bool) -> None:
        """Create people with their templates. Existing names: :class:`PersonExists`,
        or with ``replace`` the old person and all their templates are removed first."""

    @abstractmethod
    def _add_templates(self, name: str, templates: Sequence[Template]) -> None:
        """Append templates to an existing person (:class:`PersonNotFound` if absent)."""

    @abstractmethod
    def _people(self, name: str | None, thumbnails: bool) -> list[Person]:
        """All people sorted by name, or the one named ``name`` ([] if absent)."""

    @abstractmethod
    def _rename(self, old: str, new: str) -> None:
        """Rename (:class:`PersonNotFound`, :class:`PersonExists`)."""

    @abstractmethod
    def _remove(self, name: str) -> int:
        """Delete the person and every template of theirs; number of templates deleted."""

    @abstractmethod
    def _templates_of(self, name: str) -> list[Template]:
        """Every template of one person, in insertion order ([] if absent)."""

    @abstractmethod
    def _templates(self, embedder: str, embedder_version: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(names (T,) object, embeddings (T, D) float32, masked (T,) bool)."""

    @abstractmethod
    def _embedder_counts(self) -> dict[tuple[str, str], tuple[int, int, int]]:
        """(embedder, version) -> (people, templates, dimension)."""

    @abstractmethod
    def _dim(self, embedder: str, embedder_version: str) -> int | None:
        """Dimension of this embedder's stored templates, None when there are none."""

    @abstractmethod
    def _add_events(self, events: Sequence[Event]) -> int:
        """Store events whose id is not stored yet, in one transaction; identities that
        are not enrolled (at the time of writing) are stored as unknown. Returns the
        number stored."""

    @abstractmethod
    def _query_events(self, f: EventFilter, limit: int, offset: int,
                      newest_first: bool) -> tuple[list[Event], int]:
        """(page ordered by (ended, id), total matching)."""

    @abstractmethod
    def _event_counts(self, f: EventFilter, bucket_s: float, origin: float) -> dict[str, Any]:
        """``{"total", "unknown", "people": {name: n}, "by_mask": {state or None: n},
        "buckets": [(k, total, with_mask, without_mask, mask_incorrect), ...]}`` with
        buckets ``k = floor((ended - origin) / bucket_s)`` ascending, at most
        MAX_BUCKETS + 1 of them."""

    @abstractmethod
    def _purge_events(self, older_than: float) -> int:
        """Delete events with ``ended < older_than``; the number deleted."""

    @abstractmethod
    def _event_sources(self) -> list[str]:
        """Distinct sources, sorted."""

    @abstractmethod
    def change_stamp(self) -> int:
        """A number that changes whenever anything in the store changes (any process)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the object cannot be used afterwards."""

    # ------------------------------------------------------------------ people

    def add_person(self, name: str, *, thumbnail: bytes | None = None,
                   templates: Sequence[Template] = ()) -> Person:
        """Enrol a new person, with their first templates written in the same transaction.

        Args:
            name: unique name (see :func:`~maskwatch.validation.validate_name`).
            thumbnail: optional JPEG bytes of a small face crop; None keeps no photo.
            templates: templates to store with the person (all or nothing).

        Returns:
            The new :class:`Person`.

        Raises:
            InvalidName, PersonExists, GalleryError (bad templates), GalleryUnavailable.
        """
        clean = validate_name(name)
        checked = check_templates(templates)
        self._check_dims(checked)
        if thumbnail is not None and not isinstance(thumbnail, (bytes, bytearray)):
            raise GalleryError("a thumbnail must be image bytes (JPEG)")
        person = Person(new_person_id(), clean, time.time(), len(checked),
                        sum(t.synthetic for t in checked), bytes(thumbnail) if thumbnail else None)
        self._write_people([PersonRecord(person, checked)], replace=False)
        log.info("enrolled %r with %d templates in %s", clean, len(checked), self.location)
        return person

    def add_templates(self, name: str, templates: list[Template]) -> int:
        """Add templates to an enrolled person, all in one transaction.

        Returns:
            The number of templates added.

        Raises:
            InvalidName, PersonNotFound, GalleryError (bad templates), GalleryUnavailable.
        """
        clean = validate_name(name, existing=True)
        checked = check_templates(templates)
        if not checked:
            if not self._people(clean, False):
                raise PersonNotFound(f"no person named {clean!r} is enrolled")
            return 0
        self._check_dims(checked)
        self._add_templates(clean, checked)
        return len(checked)

    def list_people(self, *, thumbnails: bool = False) -> list[Person]:
        """Everyone enrolled, sorted by name; thumbnails are loaded only when asked."""
        return self._people(None, thumbnails)

    def get_person(self, name: str) -> Person:
        """The person named ``name``, thumbnail included (:class:`PersonNotFound`)."""
        clean = validate_name(name, existing=True)
        found = self._people(clean, True)
        if not found:
            raise PersonNotFound(f"no person named {clean!r} is enrolled")
        return found[0]

    def rename(self, old: str, new: str) -> Person:
        """Give a person a new name; their templates follow. Returns the renamed person."""
        old_c, new_c = validate_name(old, existing=True), validate_name(new)
        if old_c != new_c:
            self._rename(old_c, new_c)
        return self.get_person(new_c)

    def remove_person(self, name: str) -> int:
        """Delete a person and everything about them (templates, thumbnail, events).

        Returns:
            The number of templates deleted.

        Raises:
            InvalidName, PersonNotFound, GalleryUnavailable.
        """
        clean = validate_name(name, existing=True)
        removed = self._remove(clean)
        log.info("removed %r and %d templates from %s", clean, removed, self.location)
        return removed

    def templates_of(self, name: str) -> list[Template]:
        """Every template of one person (:class:`PersonNotFound`)."""
        clean = validate_name(name, existing=True)
        if not self._people(clean, False):
            raise PersonNotFound(f"no person named {clean!r} is enrolled")
        return self._templates_of(clean)

    # ------------------------------------------------------------------ events

    def add_events(self, events: Sequence[Event]) -> int:
        """Store events (one transaction). Ids already stored are skipped, so writing a
        batch twice stores it once. An identity that is not enrolled when the events
        are written (removed or renamed meanwhile) is stored as unknown.

        Returns:
            The number of events stored.

        Raises:
            GalleryError: a malformed event (nothing written); GalleryUnavailable.
        """
        checked = check_events(events)
        if not checked:
            return 0
        return self._add_events(checked)

    def query_events(self, *, since: float | None = None, until: float | None = None,
                     source: str | None = None, identity: str | None = None,
                     mask_state: str | None = None, limit: int = 50, offset: int = 0,
                     newest_first: bool = True) -> tuple[list[Event], int]:
        """One page of events and the number of all events that match.

        Args:
            since, until: Unix seconds; events with ``since <= ended < until``.
            source: exact source (see :meth:`event_sources`).
            identity: a person's name, or ``""`` / :data:`~maskwatch.records.UNKNOWN`
                for unknown faces.
            mask_state: ``with_mask``, ``without_mask``, ``mask_incorrect``, or ``""`` /
                :data:`~maskwatch.records.UNCLASSIFIED` for events never classified.
            limit: page size, 1 to :data:`MAX_EVENTS_PAGE`.
            offset: events to skip (>= 0).
            newest_first: order by end time, newest first (ties by id, so pages
                never overlap); False: oldest first.

        Returns:
            ``(events, total)``.

        Raises:
            GalleryError / InvalidName: bad arguments (one clear sentence); GalleryUnavailable.
        """
        f = event_filter(since=since, until=until, source=source, identity=identity, mask_state=mask_state)
        for value, what, lo, hi in ((limit, "limit", 1, MAX_EVENTS_PAGE), (offset, "offset", 0, None)):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi and value > hi):
                raise GalleryError(f"{what} must be a whole number from {lo}" + (f" to {hi}" if hi else " up")
                                   + f", got {value!r}")
        return self._query_events(f, int(limit), int(offset), bool(newest_first))

    def iter_events(self, *, since: float | None = None, until: float | None = None,
                    source: str | None = None, identity: str | None = None,
                    mask_state: str | None = None, batch: int = MAX_EVENTS_PAGE) -> Iterator[Event]:
        """Every matching event, oldest first, read page by page (for exports).

        ``until`` defaults to the time of the call, so that events written while
        iterating do not shift the pages.
        """
        until = time.time() if until is None else until
        offset = 0
        while True:
            page, _ = self.query_events(since=since, until=until, source=source, identity=identity,
                                        mask_state=mask_state, limit=batch, offset=offset, newest_first=False)
            yield from page
            if len(page) < batch:
                return
            offset += len(page)

    def event_stats(self, *, since: float | None = None, until: float | None = None,
                    source: str | None = None, bucket_s: float = 3600,
                    bucket_origin: float = 0.0) -> dict[str, Any]:
        """Counts for a dashboard, computed in the store.

        Args:
            since, until, source: as in :meth:`query_events`.
            bucket_s: bucket width in seconds (>= 1), by end time.
            bucket_origin: Unix seconds where buckets are aligned (default 0: with
                ``bucket_s=3600`` buckets are whole UTC hours; pass a local midnight
                to get local days with ``bucket_s=86400``).

        Returns:
            ``{"total": n, "unknown": n, "unclassified": n, "people_seen": {name: n},
            "by_mask": {state: n for every state}, "compliance": f | None,
            "bucket_s": s, "buckets": [{"start": t, "total": n, "with_mask": n,
            "without_mask": n, "mask_incorrect": n, "compliance": f | None}, ...]}``,
            where compliance is the fraction of classified events whose mask state is
            ``with_mask`` (None when none was classified) and only non-empty buckets
            are listed, ascending.

        Raises:
            GalleryError: bad arguments, or more than :data:`MAX_BUCKETS` non-empty
                buckets; GalleryUnavailable.
        """
        f = event_filter(since=since, until=until, source=source)
        width = _event_time(bucket_s, "bucket_s")
        origin = _event_time(bucket_origin, "bucket_origin")
        if width is None or width < 1:
            raise GalleryError(f"bucket_s must be at least 1 second, got {bucket_s!r}")
        raw = self._event_counts(f, width, origin or 0.0)
        if len(raw["buckets"]) > MAX_BUCKETS:
            raise GalleryError(f"more than {MAX_BUCKETS} buckets of {width:g} s: choose larger buckets or a shorter period")

        def compliance(w: int, classified: int) -> float | None:
            return w / classified if classified else None

        by_mask = {k: int(raw["by_mask"].get(k, 0)) for k in MASK_CLASSES}
        buckets = [{"start": (origin or 0.0) + k * width, "total": int(n), "with_mask": int(w),
                    "without_mask": int(wo), "mask_incorrect": int(inc), "compliance": compliance(w, w + wo + inc)}
                   for k, n, w, wo, inc in raw["buckets"]]
        return {
            "total": int(raw["total"]), "unknown": int(raw["unknown"]),
            "unclassified": int(raw["by_mask"].get(None, 0)),
            "people_seen": dict(sorted(raw["people"].items(), key=lambda kv: (-kv[1], kv[0]))),
            "by_mask": by_mask, "compliance": compliance(by_mask["with_mask"], sum(by_mask.values())),
            "bucket_s": width, "buckets": buckets,
        }

    def purge_events(self, older_than: float) -> int:
        """Delete every event that ended before ``older_than`` (Unix seconds): retention.

        Returns:
            The number deleted.
        """
        cutoff = _event_time(older_than, "older_than")
        if cutoff is None:
            raise GalleryError("older_than must be a time in Unix seconds")
        n = self._purge_events(cutoff)
        if n:
            log.info("deleted %d events that ended before %s from %s", n,
                     time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(cutoff)), self.location)
        return n

    def event_sources(self) -> list[str]:
        """Every source that has events, sorted."""
        return self._event_sources()

    # ------------------------------------------------------------------ templates and search

    def templates(self, embedder: str, embedder_version: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every template made by one embedder: the input of a matcher.

        Returns:
            ``(names, embeddings, masked)``: (T,) object array of person names,
            (T, D) float32 embeddings, (T,) bool masked flags. Templates of other
            embedders or versions are never included.
        """
        return self._templates(str(embedder), str(embedder_version))

    def embedders_in_use(self) -> dict[tuple[str, str], int]:
        """(embedder, version) -> number of people with templates of it."""
        return {k: v[0] for k, v in self._embedder_counts().items()}

    def other_embedders_message(self, embedder: str, embedder_version: str,
                                reenrol_hint: str = REENROL_HINT) -> str | None:
        """A sentence about people whose templates this embedder cannot match, or None.

        Example: ``"3 people were enrolled with another embedder (arcface v2) and will
        not be recognised: re-enrol them with `maskwatch people add NAME PHOTO...`"``;
        ``reenrol_hint`` replaces the part after the colon (the command line passes
        one naming ``--add --embedder``).
        """
        others = sorted(k for k in self._embedder_counts() if k != (embedder, embedder_version))
        if not others:
            return None
        people_other = self._people_without(embedder, embedder_version)
        if not people_other:
            return None
        which = ", ".join(f"{n} v{v}" for n, v in others)
        word = "person was" if people_other == 1 else "people were"
        return (f"{people_other} {word} enrolled with another embedder ({which}) and will not be "
                f"recognised: {reenrol_hint}")

    def _people_without(self, embedder: str, embedder_version: str) -> int:
        """People with no template of this embedder (they cannot be recognised)."""
        names = set(self._templates(embedder, embedder_version)[0].tolist())
        return sum(1 for p in self._people(None, False) if p.templates and p.name not in names)

    def _check_dims(self, templates: Sequence[Template]) -> None:
        for key in sorted({(t.embedder, t.embedder_version) for t in templates}):
            size = next(t.embedding.size for t in templates if (t.embedder, t.embedder_version) == key)
            have = self._dim(*key)
            if have is not None and have != size:
                raise GalleryError(f"{key[0]} v{key[1]} templates in this gallery have {have} "
                                   f"dimensions, the new ones {size}")

    def _load_matcher(self, key: tuple[str, str, float, float], *,
                      force: bool = False) -> tuple[int, EmbeddingMatcher]:
        """Read the change stamp and, when it moved (or with ``force``), the templates:
        ``(stamp, matcher)``.

        The cache lock is not held while the store is read, so a store that takes its
        whole timeout (seconds) to fail holds up no other thread's cached look-up.

        Raises:
            GalleryError: the store could not be read (nothing in the cache changes).
        """
        stamp = self.change_stamp()
        with self._cache_lock:
            self._stamp_seen = (stamp, time.monotonic())
            self._down = None
            cached = self._matchers.get(key)
            if cached is not None and cached[0] == stamp and not force:
                return cached
        names, emb, masked = self._templates(key[0], key[1])
        dim = emb.shape[1] if emb.ndim == 2 and emb.shape[1] else 1
        m = EmbeddingMatcher(names, emb.reshape(len(names), dim), masked,
                             threshold=key[2], masked_threshold=key[3])
        with self._cache_lock:
            self._matchers = {k: v for k, v in self._matchers.items() if v[0] == stamp}
            self._matchers[key] = (stamp, m)
        return stamp, m

    def matcher(self, embedder: str, embedder_version: str, threshold: float = 0.4,
                masked_threshold: float = 0.4, *, max_age_s: float = 1.0,
                stale_ok: bool = True) -> EmbeddingMatcher:
        """A matcher over this embedder's templates, cached until the store changes.

        The store's change stamp is read at most every ``max_age_s`` seconds, so
        calling this once per frame costs nothing between reads; changes by other
        processes are seen within ``max_age_s``. A read happens on the calling thread:
        an engine that must never wait on the store uses :meth:`live_matcher`.

        Args:
            embedder, embedder_version: whose templates to use (others are never mixed in).
            threshold: minimum cosine similarity for unmasked probes, -1..1; higher is
                stricter (SFace: about 0.36-0.4).
            masked_threshold: the same for masked probes (matched against masked templates).
            max_age_s: how old, in seconds, the last look at the change stamp may be.
            stale_ok: when the store cannot be reached and a matcher was built before,
                return that one (and log a warning) instead of raising.

        Raises:
            GalleryUnavailable: the store is down and no matcher was built before (or
                ``stale_ok`` is False); GalleryError for other store failures (access
                refused, unreadable file). After a failure the store is not asked
                again for :attr:`retry_after_s` seconds; calls in between fail at once.
        """
        key = (str(embedder), str(embedder_version), float(threshold), float(masked_threshold))
        with self._cache_lock:
            cached = self._matchers.get(key)
            now = time.monotonic()
            seen = self._stamp_seen
            if cached is not None and seen is not None and now - seen[1] <= max_age_s and cached[0] == seen[0]:
                return cached[1]
            if self._down is not None and now < self._down[0]:
                if cached is not None and stale_ok:
                    return cached[1]
                raise type(self._down[1])(str(self._down[1]))
        try:
            return self._load_matcher(key)[1]
        except GalleryError as exc:
            with self._cache_lock:
                self._down = (time.monotonic() + self.retry_after_s, exc)
            if cached is not None and stale_ok:
                log.warning("%s; using the templates loaded before", exc)
                return cached[1]
            raise

    def search(self, embeddings: np.ndarray, masked: np.ndarray | None = None, *, embedder: str,
               embedder_version: str, threshold: float = 0.4, masked_threshold: float = 0.4,
               max_age_s: float = 1.0) -> list[tuple[str | None, float]]:
        """Best person per probe embedding, by exact cosine similarity.

        Args:
            embeddings: (N, D) probe embeddings of the same embedder.
            masked: (N,) bool; masked probes are compared with masked templates and
                ``masked_threshold`` (default: all unmasked).
            embedder, embedder_version: whose templates to search.
            threshold, masked_threshold, max_age_s: as in :meth:`matcher`.

        Returns:
            ``(name, similarity)`` per probe; name is None below the threshold.
        """
        probes = np.asarray(embeddings, np.float32)
        probes = probes.reshape(len(probes), -1) if probes.ndim != 1 else probes[None]
        flags = np.zeros(len(probes), bool) if masked is None else np.asarray(masked, bool).reshape(-1)
        m = self.matcher(embedder, embedder_version, threshold, masked_threshold, max_age_s=max_age_s)
        if len(m) and probes.shape[1] != m.embeddings.shape[1]:
            raise GalleryError(f"probe embeddings have {probes.shape[1]} dimensions, "
                               f"the {embedder} templates {m.embeddings.shape[1]}")
        return m.identify(probes, flags)

    def live_matcher(self, embedder: str, embedder_version: str, threshold: float = 0.4,
                     masked_threshold: float = 0.4, *, max_age_s: float = 1.0,
                     on_change: Callable[[], None] | None = None) -> LiveMatcher:
        """A matcher for the engine: the gallery's current templates, kept up to date
        by a background thread, so that identifying a face never waits on the store;
        unrecognised faces (not an exception) while nothing could be loaded. See
        :class:`LiveMatcher` for ``max_age_s`` and ``on_change``."""
        return LiveMatcher(self, embedder, embedder_version, threshold, masked_threshold, max_age_s,
                           on_change=on_change)

    # ------------------------------------------------------------------ export / import

    def export(self, path: str | os.PathLike[str]) -> int:
        """Write every person and template to a JSON-lines file (events are not exported).

        The first line is a header ``{"format": "maskwatch-gallery", "version": 1}``;
        then one line per person: name, created, thumbnail (base64 JPEG or null) and
        templates (embedding as base64 little-endian float32, embedder, version,
        masked, synthetic, source). No photos, only thumbnails that were stored.
        The file is written to a temporary name and renamed, so a failed export
        leaves no partial file.

        Returns:
            The number of people written.
        """
        target = Path(path)
        tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
        people = self.list_people(thumbnails=True)
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(json.dumps({"format": EXPORT_FORMAT, "version": EXPORT_VERSION,
                                    "people": len(people)}) + "\n")
                for p in people:
                    rows = [{
                        "embedding": base64.b64encode(t.embedding.astype("<f4").tobytes()).decode("ascii"),
                        "embedder": t.embedder, "embedder_version": t.embedder_version,
                        "masked": t.masked, "synthetic": t.synthetic, "source": t.source,
                    } for t in self._templates_of(p.name)]
                    f.write(json.dumps({
                        "name": p.name, "created": p.created,
                        "thumbnail": base64.b64encode(p.thumbnail).decode("ascii") if p.thumbnail else None,
                        "templates": rows,
                    }, ensure_ascii=False) + "\n")
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise GalleryError(f"cannot write the export file {target}: {exc.strerror or exc}") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return len(people)

    def import_(self, path: str | os.PathLike[str], *, replace: bool = False) -> int:
        """Read a file written by :meth:`export` into this gallery, all or nothing.

        Args:
            path: the export file.
            replace: replace people who are already enrolled (with all their
                templates; their events stay theirs); by default any name already
                enrolled refuses the import.

        Returns:
            The number of people imported.

        Raises:
            GalleryError: unreadable or malformed file (naming the line), duplicate
                names in the file; PersonExists: names already enrolled.
        """
        records = read_export(path)
        for rec in records:
            self._check_dims(rec.templates)
        if not replace:
            existing = {p.name for p in self._people(None, False)}
            clash = [r.person.name for r in records if r.person.name in existing]
            if clash:
                more = f" and {len(clash) - 3} more" if len(clash) > 3 else ""
                raise PersonExists(
                    f"{', '.join(repr(n) for n in clash[:3])}{more} already enrolled; "
                    "nothing was imported (use replace to overwrite them)")
        self._write_people(records, replace=replace)
        log.info("imported %d people from %s into %s", len(records), path, self.location)
        return len(records)

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"


def read_export(path: str | os.PathLike[str]) -> list[PersonRecord]:
    """Parse and validate an export file completely (nothing is written).

    Raises:
        GalleryError: naming the file and line that is wrong.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise GalleryError(f"{p}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise GalleryError(f"cannot read {p}: {getattr(exc, 'strerror', None) or exc}") from exc
    if not lines:
        raise GalleryError(f"{p} is empty, not a gallery export")
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
        raise GalleryError(f"{p} is not a maskwatch gallery export (its first line lacks the format header)")
    if header.get("version") != EXPORT_VERSION:
        raise GalleryError(f"{p} is a version {header.get('version')} export; this maskwatch reads version {EXPORT_VERSION}")
    records: list[PersonRecord] = []
    seen: set[str] = set()
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            name = validate_name(row["name"])
            created = float(row.get("created") or time.time())
            if not math.isfinite(created):
                raise ValueError("created is not a number")
            thumb = base64.b64decode(row["thumbnail"], validate=True) if row.get("thumbnail") else None
            pid = new_person_id()
            temps = [Template(pid, np.frombuffer(base64.b64decode(t["embedding"], validate=True), "<f4").astype(np.float32),
                              str(t["embedder"]), str(t["embedder_version"]), bool(t.get("masked", False)),
                              bool(t.get("synthetic", False)), str(t.get("source", "")))
                     for t in row.get("templates", [])]
            temps = check_templates(temps)
        except GalleryError as exc:
            raise GalleryError(f"{p}, line {lineno}: {exc}") from exc
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise GalleryError(f"{p}, line {lineno}: malformed person record ({exc})") from exc
        if name in seen:
            raise GalleryError(f"{p}, line {lineno}: the name {name!r} appears twice")
        seen.add(name)
        records.append(PersonRecord(Person(pid, name, created, len(temps), sum(t.synthetic for t in temps), thumb), temps))
    return records


class LiveMatcher:
    """The gallery's current matcher behind the engine's ``identify`` call.

    With ``max_age_s > 0`` (the default; the web service and ``maskwatch analyze --db``
    use it) every read of the store is done by a watcher thread, one per LiveMatcher:
    it reads the change stamp every ``max_age_s`` seconds while the store answers;
    when the stamp moved it loads the templates, builds the new
    :class:`~maskwatch.recognition.EmbeddingMatcher` (and its approximate index, when
    one is due) and swaps it in with one assignment. :meth:`identify` only uses the
    matcher swapped in last, so a store that is down, slow or locked never holds up
    the thread that analyses frames. While the store cannot be read the watcher tries
    again after :attr:`retry_first_s`, doubling up to :attr:`retry_max_s` (a failed
    read of MongoDB itself takes its ``timeout_s``, on the watcher), and faces are
    matched against the templates loaded before, or stay unrecognised when none were
    (names fall back to unknown); a warning is logged once per outage, and a line when
    the store answers again.

    :meth:`identify` waits once, for the watcher's first look (at most
    :attr:`first_look_wait_s`), so that the first frames of a run, or the one photo of
    ``maskwatch analyze photo.jpg --db ...``, are matched against the gallery; it does
    not wait when the store failed within :attr:`Gallery.retry_after_s` already.
    :meth:`reload` is for writes made by this process: the new templates are used at
    once (see there).

    ``max_age_s = 0`` starts no thread: every :meth:`identify` reads the change stamp
    itself, on the caller's thread (:meth:`Gallery.matcher` with ``max_age_s=0``), for
    tools and tests that must see every write at once and may wait on the store.

    Args:
        gallery: the store.
        embedder, embedder_version, threshold, masked_threshold: as in :meth:`Gallery.matcher`.
        max_age_s: seconds between looks at the change stamp (how long a change by another
            process may take to be seen); 0: look on every call, on the caller's thread.
        on_change: called on the watcher thread after a new matcher was swapped in (the
            first one included); the web service looks every live track up again then.
            It must not raise (an exception is logged) and should return quickly.
    """

    #: Seconds before the first retry while the store cannot be read; each failure
    #: doubles the wait up to :attr:`retry_max_s`; a successful read resets it.
    retry_first_s: float = 1.0
    retry_max_s: float = 30.0
    #: Longest wait, seconds, of the first :meth:`identify` for the watcher's first look.
    first_look_wait_s: float = 5.0

    def __init__(self, gallery: Gallery, embedder: str, embedder_version: str, threshold: float,
                 masked_threshold: float, max_age_s: float = 1.0, *,
                 on_change: Callable[[], None] | None = None) -> None:
        self.gallery = gallery
        self.embedder, self.embedder_version = embedder, embedder_version
        self.threshold, self.masked_threshold, self.max_age_s = threshold, masked_threshold, max_age_s
        self.on_change = on_change
        self._key = (str(embedder), str(embedder_version), float(threshold), float(masked_threshold))
        self._warned = False                               # max_age_s = 0: warned this outage
        self._lock = threading.Lock()
        self._current: EmbeddingMatcher | None = None      # what identify uses (None: unknown)
        self._loaded: EmbeddingMatcher | None = None       # the last matcher the watcher built
        self._wanted = 0                                   # reload() calls so far
        self._down: str | None = None                      # the store's error during an outage
        self._retry = self.retry_first_s
        self._looked = threading.Event()                   # the first look is done
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if max_age_s > 0:
            # The thread holds only a weak reference: a LiveMatcher that is dropped
            # without close() ends its thread at the next look.
            self._thread = threading.Thread(
                target=LiveMatcher._watch, args=(weakref.ref(self), self._wake, self._stop),
                name=f"maskwatch-gallery-watch {embedder}", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ the engine's side

    def identify(self, embeddings: np.ndarray, masked: np.ndarray, *,
                 masked_templates: bool = True) -> list[tuple[str | None, float]]:
        """``(name or None, similarity)`` per embedding, as :meth:`EmbeddingMatcher.identify`;
        never reads the store (unless ``max_age_s`` is 0)."""
        if self._thread is None:
            return self._identify_now(embeddings, masked, masked_templates)
        if not self._looked.is_set():
            self._looked.wait(self.first_look_wait_s)
        m = self._current
        if m is None:
            return [(None, 0.0)] * len(embeddings)
        return m.identify(embeddings, masked, masked_templates=masked_templates)

    @property
    def current(self) -> EmbeddingMatcher | None:
        """The matcher :meth:`identify` uses now; None while faces stay unrecognised."""
        return self._current if self._thread is not None else None

    @property
    def store_error(self) -> str | None:
        """The store's error while the watcher cannot read it, else None."""
        return self._down

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait (at most ``timeout`` seconds) for the watcher's first look at the store;
        True once it is done, whether the store answered or not."""
        return self._thread is None or self._looked.wait(timeout)

    def reload(self) -> None:
        """This process has just changed people: look at the store now.

        Until the watcher has loaded the new templates (milliseconds, for a store that
        has just accepted a write) :meth:`identify` answers unknown rather than use
        templates older than the change, so a removed person's name is never given
        again. Returns at once; any thread.
        """
        if self._thread is None:
            return
        with self._lock:
            self._wanted += 1
            self._current = None
        self._wake.set()

    def close(self, wait_s: float = 3.0) -> None:
        """Stop the watcher thread (waiting at most ``wait_s`` seconds for a read in
        progress); :meth:`identify` goes on with the last matcher."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(wait_s)

    def _identify_now(self, embeddings: np.ndarray, masked: np.ndarray,
                      masked_templates: bool = True) -> list[tuple[str | None, float]]:
        try:
            m = self.gallery.matcher(self.embedder, self.embedder_version, self.threshold,
                                     self.masked_threshold, max_age_s=self.max_age_s)
            self._warned = False
        except GalleryError as exc:
            if not self._warned:
                log.warning("%s; faces stay unrecognised until it is back", exc)
                self._warned = True
            return [(None, 0.0)] * len(embeddings)
        return m.identify(embeddings, masked, masked_templates=masked_templates)

    # ------------------------------------------------------------------ the watcher thread

    @staticmethod
    def _watch(ref: weakref.ref[LiveMatcher], wake: threading.Event, stop: threading.Event) -> None:
        delay = 0.0
        while True:
            wake.wait(delay)
            if stop.is_set():
                return
            me = ref()
            if me is None:
                return
            wake.clear()  # before the look: a reload() during it wakes the next one
            try:
                delay = me._look()
            except Exception:  # noqa: BLE001 - a bug must not end the watching silently
                log.exception("watching the gallery %s failed", me.gallery.location)
                delay = me.retry_max_s
            finally:
                me._looked.set()
            del me

    def _look(self) -> float:
        """One look at the store; returns the seconds until the next."""
        with self._lock:
            wanted = self._wanted
        try:
            if not self._looked.is_set():
                with self.gallery._cache_lock:
                    down = self.gallery._down
                if down is not None and time.monotonic() < down[0]:
                    raise down[1]  # failed a moment ago: the first identify need not wait
            # After an outage the templates are read whatever the stamp says: a store
            # restarted without its last writes (or restored from a backup) may count
            # from an older stamp again.
            _, m = self.gallery._load_matcher(self._key, force=self._down is not None)
            if m is not self._loaded:
                # Build any approximate index here, not on the first frame that needs it.
                m.uses_approximate(False)
                m.uses_approximate(True)
        except GalleryError as exc:
            if self._stop.is_set():
                return 0.0
            if self._down is None:
                known = "the templates loaded before are used" if self._current is not None \
                    else "faces stay unrecognised"
                log.warning("%s; %s until it is back (looking again with back-off up to %g s)",
                            exc, known, self.retry_max_s)
            self._down = str(exc)
            delay, self._retry = self._retry, min(self._retry * 2, self.retry_max_s)
            return delay
        if self._down is not None:
            log.info("the gallery %s answers again; faces are matched against its templates",
                     self.gallery.location)
            self._down = None
        self._retry = self.retry_first_s
        with self._lock:
            self._loaded = m
            if wanted != self._wanted:
                return 0.0  # a write happened during the look: look again before using it
            # new templates, or the first ones since reload(): identify answered unknown
            changed = m is not self._current
            self._current = m
        if changed and self.on_change is not None:
            try:
                self.on_change()
            except Exception:  # noqa: BLE001 - a callback must not stop the watching
                log.exception("the gallery change callback failed")
        return self.max_age_s
