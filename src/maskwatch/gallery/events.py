"""The event half of a gallery store: writing, querying, counting and purging events.

The same store as the people keeps *events* (:class:`~maskwatch.records.Event`: one
face track from appearance to end) in their own table or collection, indexed by end
time, source, person and mask state. Events point at their person by id, so a rename
shows in them at once and a removal deletes them with the person; event writes do
not bump the change stamp (they do not change what the matcher sees).

:class:`EventStoreMixin` holds the checks (arguments, pages, buckets) and the shaping
of the answers; a store (:mod:`~maskwatch.gallery.sqlite`, :mod:`~maskwatch.gallery.mongo`)
implements its ``_...`` primitives, each atomic. :class:`~maskwatch.gallery.base.Gallery`
inherits it. The event writer (:mod:`maskwatch.events`) depends on a store, never the
reverse: this module imports only leaves (:mod:`maskwatch.records`,
:mod:`maskwatch.errors`, :mod:`maskwatch.validation`, :mod:`maskwatch.types`).
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from maskwatch.errors import GalleryError
from maskwatch.records import UNCLASSIFIED, UNKNOWN, Event
from maskwatch.types import MASK_CLASSES, SHOWN_MASK_STATES
from maskwatch.validation import check_events, validate_name

log = logging.getLogger(__name__)

#: Largest page of :meth:`EventStoreMixin.query_events`.
MAX_EVENTS_PAGE = 1000
#: Most non-empty buckets :meth:`EventStoreMixin.event_stats` returns (else it asks for
#: larger buckets).
MAX_BUCKETS = 10_000


@dataclass(frozen=True)
class EventFilter:
    """Which events a query selects (all fields validated by :meth:`EventStoreMixin.query_events`).

    Attributes:
        since, until: ``since <= ended < until`` in Unix seconds; None: open.
        source: exact source text; None: any.
        identity: a person's name; None: anyone (see ``unknown``).
        unknown: only unknown faces (``identity`` is then None).
        mask_state: one of ``SHOWN_MASK_STATES`` (a class, or ``unknown``: the face
            could not be judged); None: any (see ``unclassified``).
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
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(float(value))):
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
        elif mask_state in SHOWN_MASK_STATES:
            state = str(mask_state)
        else:
            raise GalleryError(f"unknown mask state {mask_state!r}: use one of "
                               f"{', '.join(SHOWN_MASK_STATES)} or {UNCLASSIFIED}")
    return EventFilter(lo, hi, source, name, unknown, state, unclassified)


class EventStoreMixin(ABC):
    """The events of a gallery store: :meth:`add_events`, :meth:`query_events`,
    :meth:`iter_events`, :meth:`event_stats`, :meth:`purge_events`,
    :meth:`event_sources`, on top of five primitives a store implements.

    Raises :class:`GalleryError` subclasses with one clear sentence, as
    :class:`~maskwatch.gallery.base.Gallery` does.

    Attributes:
        location: where the store is, for messages (set by the store).
    """

    location: str

    # ------------------------------------------------------------------ primitives
    # Each is atomic. Filters given to them are already validated.

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
        "buckets": [(k, total, n of each of SHOWN_MASK_STATES in order), ...]}`` (a
        bucket: ``k, total, with_mask, without_mask, mask_incorrect, unknown``) with
        buckets ``k = floor((ended - origin) / bucket_s)`` ascending, at most
        MAX_BUCKETS + 1 of them."""

    @abstractmethod
    def _purge_events(self, older_than: float) -> int:
        """Delete events with ``ended < older_than``; the number deleted."""

    @abstractmethod
    def _event_sources(self) -> list[str]:
        """Distinct sources, sorted."""

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
            mask_state: ``with_mask``, ``without_mask``, ``mask_incorrect``, ``unknown``
                (the face could not be judged), or ``""`` /
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
        f = event_filter(since=since, until=until, source=source, identity=identity,
                         mask_state=mask_state)
        for value, what, lo, hi in ((limit, "limit", 1, MAX_EVENTS_PAGE),
                                    (offset, "offset", 0, None)):
            if (isinstance(value, bool) or not isinstance(value, int) or value < lo
                    or (hi and value > hi)):
                raise GalleryError(f"{what} must be a whole number from {lo}"
                                   + (f" to {hi}" if hi else " up") + f", got {value!r}")
        return self._query_events(f, int(limit), int(offset), bool(newest_first))

    def iter_events(self, *, since: float | None = None, until: float | None = None,
                    source: str | None = None, identity: str | None = None,
                    mask_state: str | None = None,
                    batch: int = MAX_EVENTS_PAGE) -> Iterator[Event]:
        """Every matching event, oldest first, read page by page (for exports).

        ``until`` defaults to the time of the call, so that events written while
        iterating do not shift the pages.
        """
        until = time.time() if until is None else until
        offset = 0
        while True:
            page, _ = self.query_events(since=since, until=until, source=source,
                                        identity=identity, mask_state=mask_state, limit=batch,
                                        offset=offset, newest_first=False)
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
            "without_mask": n, "mask_incorrect": n, "unknown": n,
            "compliance": f | None}, ...]}``, where the top-level ``unknown`` counts
            unknown *people* and ``by_mask["unknown"]`` (like a bucket's ``unknown``)
            events whose face could not be judged; compliance is the fraction of
            events with a judged mask state (one of ``MASK_CLASSES``) whose state is
            ``with_mask`` (None when none was judged), so neither unjudged nor
            unclassified events count in it; only non-empty buckets are listed,
            ascending.

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
            raise GalleryError(f"more than {MAX_BUCKETS} buckets of {width:g} s: "
                               "choose larger buckets or a shorter period")

        def compliance(w: int, classified: int) -> float | None:
            return w / classified if classified else None

        by_mask = {k: int(raw["by_mask"].get(k, 0)) for k in SHOWN_MASK_STATES}
        buckets = [{"start": (origin or 0.0) + k * width, "total": int(n), "with_mask": int(w),
                    "without_mask": int(wo), "mask_incorrect": int(inc), "unknown": int(unj),
                    "compliance": compliance(w, w + wo + inc)}
                   for k, n, w, wo, inc, unj in raw["buckets"]]
        judged = sum(by_mask[k] for k in MASK_CLASSES)
        return {
            "total": int(raw["total"]), "unknown": int(raw["unknown"]),
            "unclassified": int(raw["by_mask"].get(None, 0)),
            "people_seen": dict(sorted(raw["people"].items(), key=lambda kv: (-kv[1], kv[0]))),
            "by_mask": by_mask,
            "compliance": compliance(by_mask["with_mask"], judged),
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
