"""The engine behind the web app: shared models, one inference thread, live streams.

OpenCV dnn nets are not thread-safe and the machine has few cores, so every model call
(detection, mask classification, SFace, enrolment) runs on one dedicated worker thread;
requests await it. Each live stream (a browser's camera, a server source) has its own
:class:`~maskwatch.pipeline.Pipeline` (its own tracker) built around the shared model
objects, and its own event recorder.
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

from maskwatch.events import EventRecorder
from maskwatch.gallery import Gallery, open_gallery
from maskwatch.web.settings import WebSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How often (seconds) the gallery's change stamp is read to notice edits by other processes.
STAMP_POLL_S = 1.0
#: How often (seconds) old events are purged.
PURGE_EVERY_S = 3600.0


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
        """End the stream's tracks (recorded as events) and flush; inference thread."""
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
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="maskwatch-inference")
        self._lock = threading.Lock()
        self._streams: dict[str, LiveStream] = {}
        self._generation = 0
        self._stamp: int | None = None
        self._stamp_read = 0.0
        self._last_purge = 0.0
        # Build the models on the inference thread: some OpenCV backends bind to it.
        self._executor.submit(self._load_models).result()
        self.started = time.time()

    def _load_models(self) -> None:
        from maskwatch.enrol import enrolment_detector
        from maskwatch.models.embedder import create_embedder
        from maskwatch.models.mask_classifier import MaskClassifier
        from maskwatch.pipeline import Pipeline, PipelineConfig

        live = PipelineConfig()
        accurate = PipelineConfig.accurate()
        self.live_detector = live.make_detector()
        self.photo_detector = accurate.make_detector()
        self.enrol_detector = enrolment_detector()
        self.classifier = MaskClassifier()
        self.embedder = create_embedder(self.settings.embedder)
        note = self.gallery.other_embedders_message(
            self.embedder.name, self.embedder.version,
            f"enrol them again on the People page (this server uses --embedder {self.settings.embedder})")
        if note:
            log.warning(note)
        self.matcher = self.gallery.live_matcher(self.embedder.name, self.embedder.version,
                                                 *self.settings.resolved_thresholds())
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
        self._poll_gallery()
        return fn(*args)

    # -- gallery changes ----------------------------------------------------------

    @property
    def generation(self) -> int:
        """A number that changes whenever people change (here or in another process)."""
        return self._generation

    def people_changed(self) -> None:
        """Tell live streams to look their faces up again (after a gallery write)."""
        with self._lock:
            self._generation += 1

    def _poll_gallery(self) -> None:
        now = time.monotonic()
        if now - self._stamp_read < STAMP_POLL_S:
            return
        self._stamp_read = now
        try:
            stamp = self.gallery.change_stamp()
        except Exception:  # noqa: BLE001 - the matcher reports an unreachable store itself
            return
        if self._stamp is not None and stamp != self._stamp:
            self.people_changed()
        self._stamp = stamp
        if time.time() - self._last_purge > PURGE_EVERY_S:
            self._last_purge = time.time()
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
        """Enrol a person from BGR photos (inference thread); see :func:`maskwatch.enrol.enrol_photos`."""
        from maskwatch.enrol import enrol_photos

        try:
            return enrol_photos(self.gallery, name, list(images), detector=self.enrol_detector,
                                embedder=self.embedder, pick_largest=largest, thumbnail=thumbnail,
                                add_to_existing=add)
        finally:
            self.people_changed()

    # -- events -------------------------------------------------------------------

    def new_recorder(self, source: str) -> EventRecorder:
        # Retention is purged here, at start-up and hourly (purge_events), not by each
        # stream's recorder at every browser connection.
        return EventRecorder(self.gallery, source, retention_days=None)

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
        self.gallery.close()
