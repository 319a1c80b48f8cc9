"""Server-side sources: a camera, a video file or an RTSP/HTTP stream read on the server.

Each source has a reader thread that takes frames from
:func:`maskwatch.sources.open_source` (which reconnects cameras and URLs with
back-off), runs them through the engine on the inference thread, draws the results
(:class:`maskwatch.draw.FaceAnnotator`) and keeps the latest annotated JPEG, which
any number of MJPEG viewers read. Frames that arrive while the engine is busy are
dropped rather than queued, so a slow machine shows fewer frames, not older ones.

With ``serve --cluster`` the sources run on Dask workers instead
(:mod:`maskwatch.web.cluster_sources`); the manager, the page and the streams are the same.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from maskwatch.web.service import EngineService

log = logging.getLogger(__name__)

#: A live source with no frame for this long (seconds) is shown as reconnecting.
STALE_S = 3.0


class SourceRefused(ValueError):
    """A source the web form may not open (a file path, a malformed spec)."""


@dataclass
class SourceInfo:
    id: str
    spec: str          # as shown: URL passwords masked
    state: str         # connecting, live, reconnecting, finished, failed, stopped
    message: str
    frames: int
    fps: float
    faces: int
    worker: str = ""   # the cluster worker running it ("" on this machine)
    restarts: int = 0  # times it was restarted on another worker


class FrameBoard:
    """What a server source shows: its state, its latest annotated JPEG and engine JSON,
    and its frame rate; any number of viewers wait on it. Shared by sources read here
    (:class:`ServerSource`) and on a cluster
    (:class:`~maskwatch.web.cluster_sources.ClusterSource`)."""

    def __init__(self, source_id: str, spec: str, state: str, message: str) -> None:
        from maskwatch.sources import mask_url

        self.id = source_id
        self.spec = spec
        self.shown = mask_url(spec) if "://" in spec else spec
        self.state = state
        self.message = message
        self.frames = 0
        self.faces = 0
        self.jpeg: bytes | None = None
        self.jpeg_index = 0
        #: The engine JSON of the latest frame (``maskwatch analyze --json``'s schema).
        self.latest: dict[str, Any] | None = None
        self._times: list[float] = []
        self._last_frame = 0.0
        self._cond = threading.Condition()
        self._stop = threading.Event()

    def _publish(self, jpeg: bytes, latest: dict[str, Any], message: str) -> None:
        """Show a new frame (its JPEG and engine JSON) and wake the viewers."""
        now = time.monotonic()
        if self._times and now - self._times[-1] > STALE_S:
            self._times = []  # back after a gap: the rate is the new connection's
        self._times = (self._times + [now])[-30:]
        self._last_frame = now
        self.frames += 1
        self.latest = latest
        self.faces = len(latest.get("faces", []))
        self.state, self.message = "live", message
        with self._cond:
            self.jpeg, self.jpeg_index = jpeg, self.jpeg_index + 1
            self._cond.notify_all()

    def _silent_s(self) -> float:
        """Seconds since the last frame (0 before the first)."""
        return time.monotonic() - self._last_frame if self._last_frame else 0.0

    def _info(self, state: str, message: str, **extra: Any) -> SourceInfo:
        """The :class:`SourceInfo` shown for ``state``; ``fps`` is frames per second over
        the last 30 frames, 0 unless live."""
        fps = 0.0
        times = self._times
        if state == "live" and len(times) >= 2 and times[-1] > times[0]:
            fps = (len(times) - 1) / (times[-1] - times[0])
        return SourceInfo(self.id, self.shown, state, message, self.frames, round(fps, 1),
                          self.faces, **extra)

    def wait_frame(self, after: int, timeout: float) -> tuple[int, bytes | None]:
        """Block until a JPEG newer than ``after`` exists (or ``timeout`` seconds)."""
        with self._cond:
            self._cond.wait_for(lambda: self.jpeg_index > after or self._stop.is_set(),
                                timeout=timeout)
            return self.jpeg_index, self.jpeg

    def _wake_viewers(self) -> None:
        with self._cond:
            self._cond.notify_all()


class ServerSource(FrameBoard):
    """One source read on the server, with its own thread and tracker."""

    def __init__(self, source_id: str, spec: str, service: EngineService) -> None:
        super().__init__(source_id, spec, "connecting", "")
        self.service = service
        self._source: Any = None
        self._thread = threading.Thread(target=self._run, name=f"maskwatch-source-{source_id}",
                                        daemon=True)
        self._thread.start()

    def info(self) -> SourceInfo:
        """State now; ``fps`` is frames per second over the last 30 frames, 0 unless live."""
        state, message = self.state, self.message
        # A lost camera or stream is reopened inside open_source's iterator, which yields
        # nothing until it is back or gives up; the source says what it is doing. A read
        # that hangs without failing shows only as silence.
        lost = getattr(self._source, "reconnecting", "")
        silent_s = self._silent_s()
        if state == "live" and lost:
            state, message = "reconnecting", lost
        elif state == "live" and silent_s > STALE_S:
            state = "reconnecting"
            message = f"no frame for {silent_s:.0f} s; reconnecting to {self.shown}"
        return self._info(state, message)

    def _run(self) -> None:
        from maskwatch.draw import FaceAnnotator
        from maskwatch.events import event_source_name
        from maskwatch.sources import SourceError, open_source

        annotator = FaceAnnotator()
        service = self.service
        stream = None
        try:
            try:
                self._source = open_source(self.spec, max_pixels=service.settings.max_pixels)
            except SourceError as exc:
                self.state, self.message = "failed", str(exc)
                log.warning("source %s: %s", self.shown, exc)
                return
            if self._stop.is_set():
                return
            name = event_source_name(self._source.kind, self._source.source)
            stream = service.open_stream(f"{name}#{self.id}" if service.has_stream(name) else name)
            self.state, self.message = "live", self._source.description
            # The engine reads the source (a file at its own frame rate, as a camera would
            # deliver it) and runs each frame on the inference thread; drawing and JPEG
            # encoding stay on this thread.
            results = service.engine.run(self._source, stream=stream, realtime=True,
                                         on_problem=self._problem,
                                         call=lambda fn, *args: service.submit(fn, *args).result())
            try:
                for result in results:
                    if self._stop.is_set():
                        break
                    jpeg = annotator.jpeg(result.image, result)
                    if jpeg is not None:
                        self._publish(jpeg, result.to_dict(), self._source.description)
            finally:
                results.close()
            if not self._stop.is_set():
                self.state = "finished" if self.state != "reconnecting" else "failed"
                if self.state == "finished":
                    self.message = f"end of {self.shown}"
        except Exception as exc:  # noqa: BLE001 - a source must never take the server down
            log.exception("source %s stopped", self.shown)
            self.state, self.message = "failed", f"stopped: {exc}"
        finally:
            if self._stop.is_set():
                self.state = "stopped"
            if self._source is not None:
                self._source.close()
            if stream is not None:
                try:
                    service.close_stream_sync(stream)
                except Exception:  # noqa: BLE001 - the service may be shutting down
                    log.debug("could not close the stream of %s", self.shown, exc_info=True)
            self._wake_viewers()

    def _problem(self, item: Any) -> None:
        self.state, self.message = "reconnecting", item.message

    def stop(self, wait: float = 5.0) -> None:
        self._stop.set()
        if self._source is not None:
            self._source.close()
        self._wake_viewers()
        self._thread.join(timeout=wait)


class SourceManager:
    """The server's sources, by id (``"1"``, ``"2"``, ...).

    Args:
        service: the web app's engine service.
        max_sources: sources running at once (more are refused).
        link: a :class:`~maskwatch.web.cluster_sources.ClusterLink`: sources run on its
            cluster's workers; None: on this machine.
    """

    def __init__(self, service: EngineService, max_sources: int = 8, link: Any = None) -> None:
        self.service = service
        self.max_sources = max_sources
        self.link = link
        self._lock = threading.Lock()
        self._sources: dict[str, ServerSource] = {}
        self._next = 1

    def add(self, spec: str, *, trusted: bool = False) -> ServerSource:
        """Start reading a source.

        Args:
            spec: camera index, ``rtsp://``/``http(s)://`` URL, or (``trusted`` only,
                i.e. from the command line) a video file.
            trusted: False for specs from a web request: only cameras and URLs, so no
                request names a file on the server.

        Raises:
            SourceRefused: a malformed spec, a file from the web, too many sources.
        """
        from maskwatch.sources import SourceError, parse_source

        spec = str(spec).strip()
        if not spec or len(spec) > 2000 or any(ord(c) < 32 for c in spec):
            raise SourceRefused("give a camera number (0) or an rtsp:// or http(s):// URL")
        if not trusted and not re.fullmatch(r"(?i)(camera:)?\d{1,3}|[a-z][a-z0-9+.-]*://\S+", spec):
            # decided before parse_source, which would look the text up as a path
            raise SourceRefused("from the web page only a camera number or an rtsp:// or "
                                "http(s):// URL can be added; give files with "
                                "`maskwatch serve --source FILE`")
        try:
            kind, _ = parse_source(spec)
        except (SourceError, ValueError) as exc:
            raise SourceRefused(str(exc)) from exc
        if not trusted and kind not in ("camera", "url"):
            raise SourceRefused("from the web page only a camera number or an rtsp:// or "
                                "http(s):// URL can be added; give files with "
                                "`maskwatch serve --source FILE`")
        with self._lock:
            live = [s for s in self._sources.values()
                    if s.state not in ("finished", "failed", "stopped")]
            if len(live) >= self.max_sources:
                raise SourceRefused(f"at most {self.max_sources} sources at once; remove one first")
            sid = str(self._next)
            self._next += 1
            src: Any
            if self.link is None:
                src = ServerSource(sid, spec, self.service)
            else:
                taken = {getattr(s, "event_name", "") for s in self._sources.values()
                         if s.state not in ("finished", "failed", "stopped")}
                src = self.link.open_source(sid, spec, kind, taken)
            self._sources[sid] = src
        return src

    def get(self, source_id: str) -> Any:
        return self._sources.get(source_id)

    def list(self) -> list[SourceInfo]:
        return [s.info() for s in self._sources.values()]

    def remove(self, source_id: str) -> bool:
        with self._lock:
            src = self._sources.pop(source_id, None)
        if src is None:
            return False
        src.stop()
        return True

    def close(self) -> None:
        with self._lock:
            sources = list(self._sources.values())
            self._sources.clear()
        for s in sources:
            s.stop()
