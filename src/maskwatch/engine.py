"""The engine: the one way in to maskwatch's analysis.

An :class:`Engine` is built from :class:`EngineSettings` (mode, detector, mask
classifier, gallery, embedder, thresholds) and owns the models, the gallery and its
live matcher, and the writer of events. Everything that analyses images goes through
it: the ``maskwatch analyze`` command, the web app (one engine for the server) and the
cluster workers.

- :meth:`Engine.analyze` analyses one photo on its own (every stage on every face).
- :meth:`Engine.run` reads a source (a photo, a folder, a video file, a camera, an
  RTSP/HTTP URL) and yields a :class:`~maskwatch.pipeline.FrameResult` per frame;
  video is tracked, and with a gallery each ended face track becomes an event.
- :meth:`Engine.stream` is the same for frames that arrive one at a time (a browser's
  camera): a :class:`Stream` with its own tracker.

Example:
    >>> from maskwatch import Engine                                   # doctest: +SKIP
    >>> Engine().analyze("photo.jpg").to_dict()["faces"]               # doctest: +SKIP
    >>> with Engine(db="people.sqlite3") as engine:                    # doctest: +SKIP
    ...     for result in engine.run("clip.mp4"):
    ...         print(result.frame_index, result.faces.names)

An engine's models are used by one thread at a time (OpenCV's nets are not
thread-safe): the web app runs every call on its one inference thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.config import DEFAULT_MAX_PIXELS, DEFAULT_MIN_LUMA, DEFAULT_RETENTION_DAYS
from maskwatch.errors import SourceError

log = logging.getLogger(__name__)

#: Engine modes: ``photo`` (every stage on every face, small faces found by upscaling),
#: ``live`` (fast detection, faces tracked), ``auto`` (photo for photos and folders,
#: live for video, cameras and streams).
MODES = ("auto", "photo", "live")
#: Source kinds analysed as separate photos in ``auto`` mode.
PHOTO_KINDS = ("image", "folder")


@dataclass
class EngineSettings:
    """What an :class:`Engine` is made of.

    Attributes:
        mode: ``"auto"``, ``"photo"`` or ``"live"`` (see :data:`MODES`).
        track: follow faces from frame to frame in live mode (mask labels smoothed over
            a track, identities looked up on a schedule, one event per track); False runs
            every stage on every face of every frame.
        detector: ``"yunet"`` or ``"ssd"`` (res10 SSD).
        min_score: face detector confidence threshold (None: the mode's default).
        classifier: mask classifier ONNX file (None: the shipped one).
        min_luma, min_sharpness, min_face_size: the quality rule
            (:class:`~maskwatch.ops.quality.QualityRule`: mean luma 0-255 of the face,
            Laplacian variance, shorter box side in pixels): a face below any threshold
            that is on is shown as ``unknown`` ("cannot judge") instead of a mask state,
            in both modes. 0 turns a threshold off. Defaults: luma 8, the
            others off (:data:`~maskwatch.ops.quality.DEFAULT_RULE`).
        db: the gallery whose people are recognised: a SQLite path, ``sqlite:///path``,
            ``mongodb://host/db`` or ``"default"`` (the one in the data folder); None:
            no recognition and no events.
        embedder: ``"sface"`` or ``"dlib"`` (needs the ``[dlib]`` extra); only templates
            enrolled with the same embedder are matched.
        masked_faces: with SFace, what embeds faces wearing a mask: ``"student"`` (the
            shipped student, matched against SFace's plain templates) or ``"sface"``.
        threshold, masked_threshold: recognition thresholds, cosine similarity (None:
            the ones calibrated for the embedder).
        watch_s: seconds between looks at the gallery's change stamp (how soon people
            changed by another process are seen).
        events: record one event per ended face track in the gallery's store.
        spool: file that keeps events the store cannot take when the engine closes
            (default: ``pending-events.jsonl`` in the data folder).
        retention_days: events older than this are deleted (at start, then hourly);
            None keeps them.
        max_pixels: largest image or frame accepted by :meth:`Engine.run` and
            :meth:`Engine.analyze` of a file, in pixels.
        max_retries: reconnection attempts in a row for a camera or URL that drops
            (None: forever).
        threads: threads of each model (OpenCV's detector, onnxruntime's classifier,
            OpenVINO's or onnxruntime's embedder; OpenCV's count is for the whole
            process); None: the libraries' choice, one per core. A cluster worker held to
            one core uses 1.
    """

    mode: str = "auto"
    track: bool = True
    detector: str = "yunet"
    min_score: float | None = None
    classifier: str | None = None
    min_luma: float = DEFAULT_MIN_LUMA
    min_sharpness: float = 0.0
    min_face_size: float = 0.0
    db: str | None = None
    embedder: str = "sface"
    masked_faces: str = "student"
    threshold: float | None = None
    masked_threshold: float | None = None
    watch_s: float = 1.0
    events: bool = True
    spool: str | os.PathLike[str] | None = None
    retention_days: float | None = DEFAULT_RETENTION_DAYS
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_retries: int | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.detector not in ("yunet", "ssd"):
            raise ValueError(f"unknown detector {self.detector!r}; choose yunet or ssd")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be at least 1 (or None)")
        self.quality_rule()  # ValueError for a negative threshold

    def quality_rule(self) -> Any:
        """The :class:`~maskwatch.ops.quality.QualityRule` of ``min_luma``,
        ``min_sharpness`` and ``min_face_size``."""
        from maskwatch.ops.quality import QualityRule

        return QualityRule(min_luma=self.min_luma, min_sharpness=self.min_sharpness,
                           min_size=self.min_face_size)

    def pipeline_config(self, live: bool) -> Any:
        """The :class:`~maskwatch.pipeline.PipelineConfig` of live or photo analysis."""
        from maskwatch.pipeline import PipelineConfig

        overrides: dict[str, Any] = {"detector": self.detector, "model": self.classifier,
                                     "threads": self.threads, "quality": self.quality_rule()}
        if self.min_score is not None:
            overrides["min_score"] = self.min_score
        if not live:
            return PipelineConfig.accurate(**overrides)
        return PipelineConfig(track=self.track, **overrides)


class Engine:
    """The models, the gallery and the event writer, built once; see the module docstring.

    Args:
        settings: what to build (default :class:`EngineSettings`); keyword arguments
            override its fields (``Engine(db="people.sqlite3")``).
        on_change: called (on the gallery watcher's thread) when the templates in use
            change; the engine already makes every stream look its faces up again.

    Raises:
        maskwatch.errors.GalleryError: the gallery cannot be opened (a bad URL, a
            folder that cannot be created). A store that is down is not an error: faces
            stay unrecognised until it answers.
        maskwatch.models.dlib_embedder.DlibUnavailable: ``embedder="dlib"`` without dlib.
    """

    def __init__(self, settings: EngineSettings | None = None, *,
                 on_change: Callable[[], None] | None = None, **overrides: Any) -> None:
        from maskwatch.models.mask_classifier import MaskClassifier

        s = settings or EngineSettings()
        self.settings = replace(s, **overrides) if overrides else s
        if self.settings.threads:
            import cv2

            cv2.setNumThreads(self.settings.threads)
        self._on_change = on_change
        self._detectors: dict[str, Any] = {}
        self._pipelines: dict[bool, Any] = {}
        self._generation = 0
        self._gen_lock = threading.Lock()
        self.classifier = MaskClassifier(self.settings.classifier, threads=self.settings.threads)
        self.gallery: Any = None
        self.embedder: Any = None
        self.matcher: Any = None
        self.events: Any = None
        self._note: threading.Thread | None = None
        if self.settings.db:
            self._open_gallery()

    # -- building ---------------------------------------------------------------

    def _open_gallery(self) -> None:
        from maskwatch.gallery import open_gallery
        from maskwatch.models.embedder import engine_embedder, engine_thresholds

        s = self.settings
        self.gallery = open_gallery(None if s.db == "default" else s.db)
        try:
            threads = {"threads": s.threads} if s.threads and s.embedder == "sface" else {}
            self.embedder = engine_embedder(s.embedder, s.masked_faces, **threads)
            thr, mthr = engine_thresholds(s.embedder, self.embedder)
            thr = thr if s.threshold is None else s.threshold
            mthr = mthr if s.masked_threshold is None else s.masked_threshold
            self.matcher = self.gallery.live_matcher(self.embedder.name, self.embedder.version,
                                                     thr, mthr, max_age_s=s.watch_s,
                                                     on_change=self._templates_changed)
            if s.events:
                from maskwatch.events import SPOOL_NAME, EventWriter
                from maskwatch.gallery import default_gallery_path

                spool = (s.spool if s.spool is not None
                         else default_gallery_path().parent / SPOOL_NAME)
                self.events = EventWriter(self.gallery, spool=spool,
                                          retention_days=s.retention_days, max_backoff_s=10.0)
        except BaseException:
            self.close()
            raise
        # A note about people enrolled with another embedder needs the store: read it on a
        # thread of its own, so that a store that is down delays nothing.
        self._note = threading.Thread(target=self._note_other_embedders,
                                      name="maskwatch-gallery-note", daemon=True)
        self._note.start()

    def _note_other_embedders(self) -> None:
        name = self.settings.embedder
        hint = (f"re-enrol them with `maskwatch people add NAME PHOTO... --add --embedder {name}` "
                f"or on the People page of a server started with --embedder {name}")
        try:
            note = self.gallery.other_embedders_message(self.embedder.name, self.embedder.version,
                                                        hint)
        except Exception as exc:  # noqa: BLE001 - only a note; the matcher reports an outage
            log.info("could not check the gallery for other embedders' templates: %s", exc)
            return
        if note:
            log.warning(note)

    def detector(self, live: bool) -> Any:
        """The face detector of live or photo analysis (built on first use, then shared)."""
        key = "live" if live else "photo"
        if key not in self._detectors:
            self._detectors[key] = self.settings.pipeline_config(live).make_detector()
        return self._detectors[key]

    @property
    def enrol_detector(self) -> Any:
        """The detector of enrolment photos (:func:`maskwatch.enrol.enrolment_detector`),
        built on first use."""
        if "enrol" not in self._detectors:
            from maskwatch.enrol import enrolment_detector

            self._detectors["enrol"] = enrolment_detector()
        return self._detectors["enrol"]

    def pipeline(self, live: bool, *, track: bool | None = None) -> Any:
        """A new :class:`~maskwatch.pipeline.Pipeline` (its own tracker) around the
        engine's models; ``track`` overrides the settings' (live only)."""
        from maskwatch.pipeline import Pipeline

        config = self.settings.pipeline_config(live)
        if track is not None and live:
            config.track = track
        return Pipeline(config, detector=self.detector(live), classifier=self.classifier,
                        embedder=self.embedder, matcher=self.matcher)

    def _live(self, kind: str | None = None) -> bool:
        mode = self.settings.mode
        return mode == "live" or (mode == "auto" and kind is not None and kind not in PHOTO_KINDS)

    # -- analysis ---------------------------------------------------------------

    def analyze(self, image: np.ndarray | str | os.PathLike[str]) -> Any:
        """One photo on its own: every stage on every face.

        Args:
            image: a BGR uint8 array (H, W, 3), or an image file's path.

        Returns:
            A :class:`~maskwatch.pipeline.FrameResult`.

        Raises:
            maskwatch.ops.image.ImageError: a file that cannot be read as an image (its
                subclass ``ImageTooLarge``: one over ``max_pixels``).
        """
        if not isinstance(image, np.ndarray):
            from maskwatch.ops.image import read_image

            image = read_image(Path(image), max_pixels=self.settings.max_pixels)
        live = self._live()
        if live not in self._pipelines:
            self._pipelines[live] = self.pipeline(live, track=False)
        return self._pipelines[live].process(image, frame_index=0, timestamp=0.0)

    def run(self, source: Any, *, on_problem: Callable[[Any], None] | None = None,
            stream: Stream | None = None, realtime: bool = False,
            call: Callable[..., Any] | None = None, start: int = 0) -> Iterator[Any]:
        """Analyse a source frame by frame.

        Photos and folders (in ``auto`` and ``photo`` mode) are analysed one by one;
        video, cameras and streams are tracked, and with a gallery every ended face track
        is recorded as an event (a video file's events are dated from when its analysis
        started). The source is closed when the iteration ends, also when it is stopped
        early (``break``, ``close()``) or fails.

        Args:
            source: a path, ``"0"`` (camera), an ``rtsp://``/``http(s)://`` URL, or an open
                :class:`~maskwatch.sources.FrameSource`.
            on_problem: called with each :class:`~maskwatch.sources.SourceProblem` (an
                unreadable photo of a folder, a lost connection); default: logged.
            stream: the :class:`Stream` to analyse live frames with (the caller finishes
                it); default: a new one, finished at the end.
            realtime: read a file at its own frame rate, as a camera would deliver it.
            call: runs each model step, ``call(fn, *args) -> fn(*args)`` (the web app runs
                them on its inference thread); default: on this thread.
            start: frames with a smaller index are read and skipped, not analysed (a
                video file resumed where an earlier run stopped).

        Yields:
            A :class:`~maskwatch.pipeline.FrameResult` per readable frame, with
            ``image`` (the analysed frame), ``source`` and, for photos, ``name``.

        Raises:
            maskwatch.errors.SourceError: the source cannot be opened.
        """
        from maskwatch.sources import FrameSource, SourceProblem, open_source

        def direct(fn: Callable[..., Any], *args: Any) -> Any:
            return fn(*args)

        run_step = call or direct
        src = source if isinstance(source, FrameSource) else open_source(
            str(source), max_pixels=self.settings.max_pixels, max_retries=self.settings.max_retries)
        own = None
        try:
            # photos share no tracks, whatever the mode
            if stream is None and src.kind not in PHOTO_KINDS and self._live(src.kind):
                from maskwatch.events import event_source_name

                own = stream = self.stream(event_source_name(src.kind, src.source),
                                           time_origin=time.time() if src.kind == "video" else None)
            pace = (src.fps or 25.0) if realtime and not src.is_live else None
            started, paced = time.monotonic(), 0
            for item in src:
                if isinstance(item, SourceProblem):
                    if on_problem is not None:
                        on_problem(item)
                    else:
                        log.warning("%s: %s", item.name or item.source, item.message)
                    continue
                if item.index < start:
                    started = time.monotonic()
                    continue
                if pace:
                    time.sleep(max(0.0, started + paced / pace - time.monotonic()))
                    paced += 1
                read_at = time.time()
                if stream is not None:
                    result = run_step(stream.process, item.image, item.index, item.timestamp)
                else:
                    result = run_step(self.analyze, item.image)
                    result.frame_index, result.timestamp = item.index, item.timestamp
                result.image, result.source, result.name = item.image, item.source, item.name
                result.read_at = read_at
                yield result
        finally:
            try:
                if own is not None:
                    run_step(own.finish)
            finally:
                src.close()

    def stream(self, name: str = "stream", *, time_origin: float | None = None) -> Stream:
        """A live :class:`Stream` (its own tracker) named ``name`` in its events.

        Args:
            name: the events' source (``camera:0``, ``file:clip.mp4``, ``browser:1a2b``).
            time_origin: Unix seconds of timestamp 0 of the frames (a video file); None:
                frame timestamps are the monotonic clock (live sources).
        """
        recorder = None
        if self.events is not None and self.settings.track:
            from maskwatch.events import EventRecorder

            recorder = EventRecorder(self.gallery, name, writer=self.events,
                                     time_origin=time_origin)
        return Stream(self, name, self.pipeline(True), recorder)

    # -- people -----------------------------------------------------------------

    def enrol(self, name: str, photos: Any, **options: Any) -> Any:
        """Enrol a person in the engine's gallery from photos (paths or BGR arrays), as
        :func:`maskwatch.enrol.enrol_photos` with the engine's detector of enrolment
        photos and embedder (``options``: ``pick_largest``, ``synthetic_masks``,
        ``thumbnail``, ``add_to_existing``); every stream looks its faces up again.

        Raises:
            maskwatch.errors.GalleryError: no gallery (``db`` not set), a bad name, a photo
                without a usable face, a store that cannot be written.
        """
        from maskwatch.enrol import enrol_photos
        from maskwatch.errors import GalleryError

        if self.gallery is None:
            raise GalleryError("this engine has no gallery: give it one (db=...) to enrol people")
        try:
            return enrol_photos(self.gallery, name, list(photos), detector=self.enrol_detector,
                                embedder=self.embedder, **options)
        finally:
            self.people_changed()

    # -- gallery changes --------------------------------------------------------

    @property
    def generation(self) -> int:
        """A number that changes whenever the people in use change."""
        return self._generation

    def people_changed(self) -> None:
        """After this process changed people (enrolled, renamed, removed): load the new
        templates now, and make every stream look its faces up again. Until the new
        templates are loaded faces are unrecognised, so a removed person's name is never
        given again. Any thread; returns at once."""
        if self.matcher is not None:
            self.matcher.reload()
        with self._gen_lock:
            self._generation += 1

    def _templates_changed(self) -> None:
        with self._gen_lock:
            self._generation += 1
        if self._on_change is not None:
            self._on_change()

    def purge_events(self) -> int:
        """Delete events older than :attr:`EngineSettings.retention_days` now; how many.
        The event writer does this at start and hourly."""
        if self.gallery is None or not self.settings.retention_days:
            return 0
        return int(self.gallery.purge_events(time.time() - self.settings.retention_days * 86400.0))

    # -- closing ----------------------------------------------------------------

    def close(self) -> None:
        """Stop watching the gallery, write the events still pending (what the store
        refuses goes to the spool file), close the gallery. Streams should be finished
        first."""
        if self._note is not None:
            self._note.join(5.0)  # a short run still prints the note (a store that is down: 2.5 s)
        if self.matcher is not None:
            self.matcher.close()
        if self.events is not None:
            self.events.close()
        if self.gallery is not None:
            self.gallery.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        s = self.settings
        who = (f", db={self.gallery.location!r}, embedder={self.embedder.name!r}"
               if self.gallery else "")
        return f"Engine(mode={s.mode!r}, detector={s.detector!r}{who})"


class Stream:
    """Frames of one source analysed in order, with their own tracker.

    Made by :meth:`Engine.stream`. :meth:`process` analyses a frame (and looks every
    face up again after people changed); :meth:`finish` ends the stream's tracks (their
    events go to the engine's writer, which keeps them until the store takes them).
    """

    def __init__(self, engine: Engine, name: str, pipeline: Any, recorder: Any) -> None:
        self.engine = engine
        self.name = name
        self.pipeline = pipeline
        self.recorder = recorder
        self._generation = engine.generation
        self.frames = 0
        self.closed = False

    def process(self, image: np.ndarray, frame_index: int | None = None,
                timestamp: float | None = None) -> Any:
        """Analyse one BGR frame; returns its :class:`~maskwatch.pipeline.FrameResult`."""
        gen = self.engine.generation
        if gen != self._generation:
            # People were added, renamed or removed: look every live track up again, so
            # a removed person's name disappears and a new one appears at once.
            self.pipeline.forget_identities()
            self._generation = gen
        result = self.pipeline.process(image, frame_index=frame_index, timestamp=timestamp)
        self.frames += 1
        if result.ended and self.recorder is not None:
            self.recorder.add_tracks(result.ended)
        return result

    def finish(self) -> list[Any]:
        """End every track (recorded as events); returns them. Never waits for the store."""
        if self.closed:
            return []
        self.closed = True
        ended = self.pipeline.finish()
        if self.recorder is not None:
            try:
                if ended:
                    self.recorder.add_tracks(ended)
                self.recorder.close()
            except Exception:  # noqa: BLE001 - recording must never break the analysis
                log.exception("%s: could not record the last events", self.name)
        return ended


__all__ = ["MODES", "Engine", "EngineSettings", "SourceError", "Stream"]
