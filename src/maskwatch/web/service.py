"""The web app's side of the engine: one inference thread, live streams, enrolment.

The server has one :class:`~maskwatch.engine.Engine` (the models, the gallery, its
live matcher and the event writer). OpenCV dnn nets are not thread-safe and the
machine has few cores, so every model call (detection, mask classification, SFace,
the model half of enrolment) runs on one dedicated worker thread; requests await it.
Each live stream (a browser's camera, a server source) is an engine
:class:`~maskwatch.engine.Stream` (its own tracker and event recorder).

The inference thread never waits on the store, so a MongoDB outage or a SQLite file
locked by another writer costs live analysis nothing: templates are watched and loaded
by the gallery's :class:`~maskwatch.gallery.matching.LiveMatcher` thread (names fall back to
unknown while none could be loaded), events are written, and old ones purged, by the
engine's event writer thread (kept in memory while the store is down, and in the data
folder's spool file if the process ends before it is back), and enrolment's reads and
writes run on the caller's thread, only its detection and embedding on the inference
thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from maskwatch.engine import Engine, Stream
from maskwatch.events import SPOOL_NAME
from maskwatch.gallery import Gallery
from maskwatch.web.settings import WebSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How often (seconds) the gallery's change stamp is read to notice edits by other processes
#: (by the live matcher's watcher thread, with back-off while the store is down).
STAMP_POLL_S = 1.0
#: Longest wait (seconds) at start-up for the first look at the gallery, so that the first
#: frames are matched against it; a MongoDB that is down fails within its own 2.5 s.
FIRST_LOOK_S = 10.0


class EngineService:
    """Owns the models, the gallery, the inference thread and the live streams.

    Args:
        settings: the server's settings (gallery location, thresholds, limits).
    """

    def __init__(self, settings: WebSettings) -> None:
        self.settings = settings
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="maskwatch-inference")
        self._lock = threading.Lock()
        self._streams: dict[str, Stream] = {}
        # Build the models on the inference thread: some OpenCV backends bind to it.
        self.engine: Engine = self._executor.submit(self._load_models).result()
        self.engine.matcher.wait_ready(FIRST_LOOK_S)
        self.started = time.time()

    def _load_models(self) -> Engine:
        s = self.settings
        engine = Engine(s.engine_settings(watch_s=STAMP_POLL_S,
                                          spool=s.resolved_home() / SPOOL_NAME))
        try:
            engine.detector(live=True)
            engine.detector(live=False)
            engine.enrol_detector  # noqa: B018 - built now, on this thread
        except BaseException:
            engine.close()
            raise
        return engine

    # -- running work on the inference thread -------------------------------------

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` on the inference thread (from any thread)."""
        return self._executor.submit(self._guarded, fn, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Await ``fn(*args)`` run on the inference thread."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def _guarded(self, fn: Callable[..., T], *args: Any) -> T:
        # Nothing here touches the store: see the module docstring.
        return fn(*args)

    @property
    def gallery(self) -> Gallery:
        """The engine's gallery (people, templates, events)."""
        return self.engine.gallery

    # -- gallery changes ----------------------------------------------------------

    @property
    def generation(self) -> int:
        """A number that changes whenever people change (here or in another process)."""
        return self.engine.generation

    def people_changed(self) -> None:
        """After a gallery write by this process (see :meth:`Engine.people_changed`)."""
        self.engine.people_changed()

    # -- streams ------------------------------------------------------------------

    def open_stream(self, source: str | None = None) -> Stream:
        """A new live stream (its own tracker); ``source`` names it in events. Call its
        ``process`` on the inference thread (:meth:`submit`, :meth:`run`).

        Raises:
            RuntimeError: when :attr:`WebSettings.max_live_clients` streams are open.
        """
        with self._lock:
            if len(self._streams) >= self.settings.max_live_clients:
                raise RuntimeError(f"the server already serves {len(self._streams)} live streams; "
                                   "try again later")
            source = source or f"browser:{uuid.uuid4().hex[:8]}"
            stream = self.engine.stream(source)
            self._streams[source] = stream
            return stream

    async def close_stream(self, stream: Stream) -> None:
        with self._lock:
            self._streams.pop(stream.name, None)
        await self.run(stream.finish)

    def close_stream_sync(self, stream: Stream) -> None:
        with self._lock:
            self._streams.pop(stream.name, None)
        self.submit(stream.finish).result()

    def has_stream(self, source: str) -> bool:
        return source in self._streams

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    # -- photos -------------------------------------------------------------------

    def analyze_photo(self, image: np.ndarray) -> dict[str, Any]:
        """Engine JSON of one photo, every stage on every face (inference thread)."""
        return self.engine.analyze(image).to_dict()

    def enrol(self, name: str, images: Sequence[np.ndarray], *, add: bool = False,
              thumbnail: bool = False, largest: bool = True) -> Any:
        """Enrol a person from BGR photos, as :func:`maskwatch.enrol.enrol_photos`.

        Call it from any thread but the inference thread (a worker thread of a request):
        the gallery is read and written here, and only the detection and embedding are
        run on the inference thread (the synthetic masks are drawn here too), so a write
        that waits for the store (a SQLite file locked by another process waits up to its
        busy timeout, 10 s) holds up this enrolment and no live stream.
        """
        from maskwatch.enrol import check_enrolment, prepare_enrolment, store_enrolment

        clean, _ = check_enrolment(self.gallery, name, add_to_existing=add)
        prepared = prepare_enrolment(clean, list(images), detector=self.engine.enrol_detector,
                                     embedder=self.engine.embedder, pick_largest=largest,
                                     thumbnail=thumbnail,
                                     run_model=lambda step: self.submit(step).result())
        try:
            return store_enrolment(self.gallery, prepared, add_to_existing=add)
        finally:
            self.people_changed()

    # -- events -------------------------------------------------------------------

    def purge_events(self) -> int:
        """Delete events older than the retention period now; returns how many (the
        engine's event writer does this at start and hourly)."""
        try:
            return self.engine.purge_events()
        except Exception as exc:  # noqa: BLE001 - purging again later is fine
            log.warning("could not purge old events: %s", exc)
            return 0

    def close(self) -> None:
        """Finish every stream (their events are handed to the writer), stop the thread,
        close the engine (the events still pending are written, or kept in the spool)."""
        with self._lock:
            streams = list(self._streams.values())
            self._streams.clear()
        for st in streams:
            try:
                self._executor.submit(st.finish).result(timeout=10)
            except Exception:  # noqa: BLE001
                log.exception("could not finish %s", st.name)
        self._executor.shutdown(wait=True)
        self.engine.close()
