"""Matching faces against a gallery: the store's cached matcher and the engine's live one.

Every write to people or templates bumps a change stamp kept *in the store*, so a
second process (the web app beside the engine) that writes to the same gallery is
noticed by the first one's cached matcher.

:class:`MatcherCacheMixin` keeps one :class:`~maskwatch.recognition.EmbeddingMatcher`
per (embedder, version, thresholds), rebuilt when the change stamp moves
(:meth:`~MatcherCacheMixin.matcher`, :meth:`~MatcherCacheMixin.search`);
:class:`~maskwatch.gallery.base.Gallery` inherits it and a store implements its two
primitives (:meth:`~MatcherCacheMixin.change_stamp` and ``_templates``).
:class:`LiveMatcher` is what the engine calls: a watcher thread keeps its matcher up to
date, so that identifying a face never waits on the store.

This module imports only leaves (:mod:`maskwatch.errors`, :mod:`maskwatch.recognition`).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np

from maskwatch.errors import GalleryError
from maskwatch.recognition import EmbeddingMatcher

log = logging.getLogger(__name__)


class MatcherCacheMixin(ABC):
    """Matchers over a store's templates, cached until the store changes.

    Safe to share between threads. A store implements :meth:`change_stamp` and
    ``_templates``; calls raise :class:`GalleryError` subclasses as
    :class:`~maskwatch.gallery.base.Gallery` does.

    Attributes:
        location: where the store is, for messages (set by the store).
    """

    location: str

    #: After a failed look-up of the change stamp, :meth:`matcher` does not ask the
    #: store again for this long (seconds), so that a down server costs the engine
    #: one timeout, not one per frame.
    retry_after_s: float = 10.0

    def __init__(self) -> None:
        super().__init__()
        self._cache_lock = threading.Lock()
        # (embedder, version, threshold, masked_threshold) -> (stamp, matcher)
        self._matchers: dict[tuple[str, str, float, float], tuple[int, EmbeddingMatcher]] = {}
        self._stamp_seen: tuple[int, float] | None = None  # (stamp, monotonic time read)
        self._down: tuple[float, GalleryError] | None = None  # (monotonic time to retry, the error)

    # ------------------------------------------------------------------ primitives

    @abstractmethod
    def _templates(self, embedder: str,
                   embedder_version: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(names (T,) object, embeddings (T, D) float32, masked (T,) bool)."""

    @abstractmethod
    def change_stamp(self) -> int:
        """A number that changes whenever anything in the store changes (any process)."""

    # ------------------------------------------------------------------ the cache

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
            if (cached is not None and seen is not None and now - seen[1] <= max_age_s
                    and cached[0] == seen[0]):
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
        flags = (np.zeros(len(probes), bool) if masked is None
                 else np.asarray(masked, bool).reshape(-1))
        m = self.matcher(embedder, embedder_version, threshold, masked_threshold,
                         max_age_s=max_age_s)
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
    not wait when the store failed within :attr:`MatcherCacheMixin.retry_after_s`
    already.
    :meth:`reload` is for writes made by this process: the new templates are used at
    once (see there).

    ``max_age_s = 0`` starts no thread: every :meth:`identify` reads the change stamp
    itself, on the caller's thread (:meth:`MatcherCacheMixin.matcher` with
    ``max_age_s=0``), for tools and tests that must see every write at once and may wait
    on the store.

    Args:
        gallery: the store.
        embedder, embedder_version, threshold, masked_threshold: as in
            :meth:`MatcherCacheMixin.matcher`.
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

    def __init__(self, gallery: MatcherCacheMixin, embedder: str, embedder_version: str,
                 threshold: float, masked_threshold: float, max_age_s: float = 1.0, *,
                 on_change: Callable[[], None] | None = None) -> None:
        self.gallery = gallery
        self.embedder, self.embedder_version = embedder, embedder_version
        self.threshold, self.masked_threshold = threshold, masked_threshold
        self.max_age_s = max_age_s
        self.on_change = on_change
        self._key = (str(embedder), str(embedder_version), float(threshold),
                     float(masked_threshold))
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
