"""The engine behind the web app: shared models, one inference thread, live streams.

OpenCV dnn nets are not thread-safe and the machine has few cores, so every model call
(detection, mask classification, SFace, the model half of enrolment) runs on one dedicated
worker thread; requests await it. Each live stream (a browser's camera, a server source)
has its own :class:`~maskwatch.pipeline.Pipeline` (its own tracker) built around the shared
model objects, and its own event recorder, which hands the stream's events to the
service's one :class:`~maskwatch.events.EventWriter`.

The inference thread never waits on the store, so a MongoDB outage or a SQLite file
locked by another writer costs live analysis nothing: templates are watched and loaded
by the gallery's :class:`~maskwatch.gallery.base.LiveMatcher` thread (names fall back to
unknown while none could be loaded), events are written by the event writer's thread
(kept in memory while the store is down, and in the data folder's spool file if the
process ends before it is back), retention is purged by this service's store thread,
and enrolment's reads and writes run on the caller's thread, only its detection and
embedding on the inference thread.
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

from maskwatch.events import SPOOL_NAME, EventRecorder, EventWriter
from maskwatch.gallery import Gallery, open_gallery
from maskwatch.web.settings import WebSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How often (seconds) the gallery's change stamp is read to notice edits by other processes
#: (by the live matcher's watcher thread, with back-off while the store is down).
STAMP_POLL_S = 1.0
#: How often (seconds) old events are purged (by the store thread).
PURGE_EVERY_S = 3600.0
#: Longest wait (seconds) at start-up for the first look at the gallery, so that the first
#: frames are matched against it; a MongoDB that is down fails within its own 2.5 s.
FIRST_LOOK_S = 10.0


class LiveStream:
    """One stream of frames (a browser camera or a server source) with its own tracker.

    Use :meth:`EngineService.open_stream`; call :meth:`process` only on the inference
    thread (:meth:`EngineService.run` does that), :meth:`close` when the stream ends.
    """

    def __init__(self, service: EngineService, source: str) -> None:
        from maskwatch.pipeline import Pipeline, PipelineConfig

        self.service = service
        self.source = source
        self.pipeline = Pipeline(PipelineConfig(), detector=service.live_detector,
                                 classifier=service.classifier, embedder=service.embedder,
                                 matcher=service.matcher)
        self.recorder = service.new_recorder(source)
        self._generation = service.generation
        self.frames = 0
        self.closed = False

    def process(self, image: np.ndarray) -> Any:
        """Analyse one BGR frame; returns the :class:`~maskwatch.pipeline.FrameResult`."""
        gen = self.service.generation
        if gen != self._generation:
            # People were added, renamed or removed: look every live track up again, so
            # a deleted person's name disappears and a new one appears at once.
            self.pipeline.forget_identities()
            self._generation = gen
        result = self.pipeline.process(image)
        self.frames += 1
        if result.ended and self.recorder is not None:
            self.recorder.add_tracks(result.ended)
        return result

    def finish(self) -> None:
        """End the stream's tracks (recorded as events); inference thread. Never waits for
        the store: the events stay with the service's writer until they are written."""
        if self.closed:
            return
        self.closed = True
        ended = self.pipeline.finish()
        if self.recorder is not None:
            try:
                if ended:
                    self.recorder.add_tracks(ended)
                self.recorder.close()
            except Exception:  # noqa: BLE001 - the recorder must never break the server
                log.exception("%s: could not record the last events", self.source)


class EngineService:
    """Owns the models, the gallery, the inference thread and the live streams.

    Args:
        settings: the server's settings (gallery location, thresholds, limits).
    """

    def __init__(self, settings: WebSettings) -> None:
        self.settings = settings
        self.gallery: Gallery = open_gallery(settings.db)
        # One writer for the events of every stream, for the life of the service: a stream
        # that ends while the store is down leaves its events here (in the spool file at
        # close), and the spool of an earlier run is written by its thread while the
        # models load. Retention is purged by the store thread, not here.
        self.events = EventWriter(self.gallery, spool=settings.resolved_home() / SPOOL_NAME,
                                  retention_days=None, max_backoff_s=10.0)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="maskwatch-inference")
        self._lock = threading.Lock()
        self._streams: dict[str, LiveStream] = {}
        self._generation = 0
        self._closing = threading.Event()
        # Build the models on the inference thread: some OpenCV backends bind to it.
        self._executor.submit(self._load_models).result()
        self.matcher.wait_ready(FIRST_LOOK_S)
        self._store_thread = threading.Thread(target=self._store_loop, name="maskwatch-store",
                                              daemon=True)
        self._store_thread.start()
        self.started = time.time()

    def _load_models(self) -> None:
        from maskwatch.enrol import enrolment_detector
        from maskwatch.models.embedder import engine_embedder
        from maskwatch.models.mask_classifier import MaskClassifier
        from maskwatch.pipeline import Pipeline, PipelineConfig

        live = PipelineConfig()
        accurate = PipelineConfig.accurate()
        self.live_detector = live.make_detector()
        self.photo_detector = accurate.make_detector()
        self.enrol_detector = enrolment_detector()
        self.classifier = MaskClassifier()
        self.embedder = engine_embedder(self.settings.embedder, self.settings.masked_faces)
        # The templates are read by the matcher's own thread, never by this one.
        self.matcher = self.gallery.live_matcher(self.embedder.name, self.embedder.version,
                                                 *self.settings.resolved_thresholds(self.embedder),
                                                 max_age_s=STAMP_POLL_S, on_change=self._templates_changed)
        self.photo_pipeline = Pipeline(accurate, detector=self.photo_detector, classifier=self.classifier,
                                       embedder=self.embedder, matcher=self.matcher)

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

    # -- gallery changes ----------------------------------------------------------

    @property
    def generation(self) -> int:
        """A number that changes whenever people change (here or in another process)."""
        return self._generation

    def people_changed(self) -> None:
        """After a gallery write by this process: load the new templates now and tell
        live streams to look their faces up again (any thread; returns at once).

        Until the matcher has the new templates faces are unrecognised, so a removed
        or renamed person's old name is not given again; when they are loaded the
        streams look their faces up once more (:meth:`_templates_changed`).
        """
        self.matcher.reload()
        with self._lock:
            self._generation += 1

    def _templates_changed(self) -> None:
        """The matcher's watcher has swapped in new templates (a change by this or
        another process, or the store back after an outage): look faces up again."""
        with self._lock:
            self._generation += 1

    def _store_loop(self) -> None:
        """The store thread: the note about other embedders, then retention purges (at
        start and hourly); each waits on the store here, never on the inference thread
        nor on the event loop (a MongoDB that is down takes its 2.5 s timeout here)."""
        try:
            note = self.gallery.other_embedders_message(
                self.embedder.name, self.embedder.version,
                f"enrol them again on the People page (this server uses --embedder {self.settings.embedder})")
            if note:
                log.warning(note)
        except Exception as exc:  # noqa: BLE001 - only a note; the matcher reports an outage
            log.info("could not check the gallery for other embedders' templates: %s", exc)
        self.purge_events()
        while not self._closing.wait(PURGE_EVERY_S):
            self.purge_events()

    # -- streams ------------------------------------------------------------------

    def open_stream(self, source: str | None = None) -> LiveStream:
        """A new live stream (its own tracker); ``source`` names it in events.

        Raises:
            RuntimeError: when :attr:`WebSettings.max_live_clients` streams are open.
        """
        with self._lock:
            if len(self._streams) >= self.settings.max_live_clients:
                raise RuntimeError(f"the server already serves {len(self._streams)} live streams; try again later")
            source = source or f"browser:{uuid.uuid4().hex[:8]}"
            stream = LiveStream(self, source)
            self._streams[source] = stream
            return stream

    async def close_stream(self, stream: LiveStream) -> None:
        with self._lock:
            self._streams.pop(stream.source, None)
        await self.run(stream.finish)

    def close_stream_sync(self, stream: LiveStream) -> None:
        with self._lock:
            self._streams.pop(stream.source, None)
        self.submit(stream.finish).result()

    def has_stream(self, source: str) -> bool:
        return source in self._streams

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    # -- photos -------------------------------------------------------------------

    def analyze_photo(self, image: np.ndarray) -> dict[str, Any]:
        """Engine JSON of one photo in accurate mode (inference thread)."""
        return self.photo_pipeline.process(image, frame_index=0, timestamp=0.0).to_dict()

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
        prepared = prepare_enrolment(clean, list(images), detector=self.enrol_detector,
                                     embedder=self.embedder, pick_largest=largest, thumbnail=thumbnail,
                                     run_model=lambda step: self.submit(step).result())
        try:
            return store_enrolment(self.gallery, prepared, add_to_existing=add)
        finally:
            self.people_changed()

    # -- events -------------------------------------------------------------------

    def new_recorder(self, source: str) -> EventRecorder:
        """A recorder for one stream, handing its events to the service's writer."""
        return EventRecorder(self.gallery, source, writer=self.events)

    def purge_events(self) -> int:
        """Delete events older than the retention period; returns how many."""
        try:
            return int(self.gallery.purge_events(time.time() - self.settings.retention_days * 86400.0))
        except Exception as exc:  # noqa: BLE001 - purging again later is fine
            log.warning("could not purge old events: %s", exc)
            return 0

    def close(self) -> None:
        """Finish every stream (their events are written), stop the thread, close the store."""
        with self._lock:
            streams = list(self._streams.values())
            self._streams.clear()
        for s in streams:
            try:
                self._executor.submit(s.finish).result(timeout=10)
            except Exception:  # noqa: BLE001
                log.exception("could not finish %s", s.source)
        self._executor.shutdown(wait=True)
        self._stop_store_threads()
        self.events.close()  # one last write; what the store still refuses goes to the spool
        self.gallery.close()

    def _stop_store_threads(self) -> None:
        """End the matcher's watcher and the store thread (before the store is closed)."""
        self._closing.set()
        self.matcher.close()
        self._store_thread.join(timeout=5)
