"""Every kind of input the engine reads, behind one iterator.

``open_source(spec)`` turns what a user typed into a :class:`FrameSource`: a camera
index (``"0"``), an ``rtsp://``, ``rtsps://``, ``http://`` or ``https://`` stream, a
video file, an image file or a folder of images. Iterating a source yields
:class:`Frame` values (BGR uint8 pixels with an index and a timestamp) and, where one
item is bad but the source can go on, :class:`SourceProblem` values instead of
exceptions, so that one corrupt photo or a dropped stream does not stop a long run.

A source that cannot be used at all (a missing file, an empty folder, a camera that
does not exist, a dead URL) raises :class:`SourceError` from :func:`open_source`, with
one sentence meant for the user.

Example:
    >>> with open_source("clip.mp4") as source:          # doctest: +SKIP
    ...     for item in source:
    ...         if isinstance(item, SourceProblem):
    ...             log.warning("%s: %s", item.name or item.source, item.message)
    ...             continue
    ...         analyse(item.image)

Live sources (cameras, URLs) reconnect by themselves with exponential back-off when
the stream is lost. They read frames as fast as the caller asks for them; a caller
slower than the camera gets frames buffered by the backend (OpenCV/FFMPEG).
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import cv2
import numpy as np

from maskwatch.errors import SourceError
from maskwatch.ops.image import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    MIN_FACE_IMAGE_SIDE,
    ImageError,
    list_images,
    read_image,
    to_bgr_uint8,
)

__all__ = [
    "Frame",
    "FrameSource",
    "SourceError",
    "SourceProblem",
    "URL_SCHEMES",
    "VIDEO_SUFFIXES",
    "mask_url",
    "open_source",
    "parse_source",
]

_log = logging.getLogger(__name__)

#: File suffixes read as video without looking at the content.
VIDEO_SUFFIXES = (
    ".mp4",
    ".avi",
    ".mov",
    ".mkv",
    ".webm",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".wmv",
    ".flv",
    ".y4m",
)

#: URL schemes opened as live streams (through OpenCV's FFMPEG backend).
URL_SCHEMES = ("rtsp", "rtsps", "http", "https")

#: Query parameters whose values are hidden like a URL's password.
_SECRET_QUERY_KEYS = frozenset(
    {
        "password",
        "passwd",
        "pass",
        "pwd",
        "token",
        "access_token",
        "auth",
        "key",
        "apikey",
        "api_key",
        "secret",
    }
)

#: Frames short of the stated count that still count as a complete video: containers
#: that store a duration rather than a count give an estimate, not the exact number.
_END_TOLERANCE_FRAMES = 3

#: Frame rate assumed for timestamps when a video states none (FFMPEG's own default).
_FALLBACK_FPS = 25.0

_CAMERA_RE = re.compile(r"(?:camera:)?(\d+)", re.IGNORECASE)
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


@dataclass
class Frame:
    """One picture from a source.

    Attributes:
        image: (H, W, 3) BGR uint8 pixels.
        index: 0-based frame number within the source. For folders, the position of
            the file in the sorted listing (a bad file leaves a gap), so that
            ``index < frame_count`` always holds for progress bars.
        timestamp: seconds. Video files: the frame's position in the video
            (``CAP_PROP_POS_MSEC``, or ``index / fps`` when the container gives none).
            Live sources: ``time.monotonic()`` seconds since the source was opened.
            Single images: 0.0; folders: ``float(index)`` (one second per image, so
            that time-based code sees distinct, increasing times).
        source: where the frame came from: a path, ``"camera:0"``, or the URL with
            any password replaced by ``***``.
        name: the item's name: the image's file name (its path relative to the folder
            for folders); empty for videos and live sources.
    """

    image: np.ndarray
    index: int
    timestamp: float
    source: str
    name: str = ""


@dataclass
class SourceProblem:
    """Yielded instead of a :class:`Frame` when one item is bad and the source goes on
    (or, as the last item, when a source stops early).

    Attributes:
        source: as in :attr:`Frame.source`.
        name: the bad item's name (file name in a folder), or empty.
        message: one sentence for the user.
    """

    source: str
    name: str
    message: str


def mask_url(url: str) -> str:
    """``url`` with its password (and secret-looking query values) replaced by ``***``.

    Example:
        >>> mask_url("rtsp://admin:hunter2@10.0.0.5:554/live?token=abc&ch=1")
        'rtsp://admin:***@10.0.0.5:554/live?token=%2A%2A%2A&ch=1'
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            if ":" in userinfo:
                user = userinfo.split(":", 1)[0]
                netloc = f"{user}:***@{hostport}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(k.lower() in _SECRET_QUERY_KEYS for k, _ in pairs):
                query = urlencode(
                    [(k, "***" if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs],
                    quote_via=quote,
                )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        # An unparseable URL may still hold a password: hide everything after the scheme.
        m = _SCHEME_RE.match(url)
        return f"{m.group(1)}://***" if m else "***"


def _looks_like_image(path: Path) -> bool:
    """Whether the file's content (not its name) is an image format we can decode."""
    try:
        if cv2.haveImageReader(str(path)):
            return True
    except cv2.error:
        pass
    try:
        from PIL import Image

        with Image.open(path) as im:
            return im.format not in (None, "MPEG")  # PIL identifies MPEG video headers
    except Exception:  # noqa: BLE001 - anything PIL cannot identify is "not an image"
        return False


def _looks_like_video(path: Path) -> bool:
    """Whether OpenCV can open the file as a video and decode one frame."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return False
        ok, frame = cap.read()
        return bool(ok) and frame is not None and frame.size > 0
    except cv2.error:
        return False
    finally:
        cap.release()


def parse_source(spec: str | os.PathLike[str]) -> tuple[str, str]:
    """Decide what kind of input ``spec`` names.

    Args:
        spec: what the user typed: ``"0"`` (or ``"camera:0"``) for a camera index, an
            ``rtsp://``, ``rtsps://``, ``http://`` or ``https://`` URL, or the path of
            a folder, a video or an image. A number is always a camera, even if a file
            of that name exists (write ``./0`` for the file).

    Returns:
        ``(kind, target)``: kind is ``"camera"``, ``"url"``, ``"folder"``, ``"video"``
        or ``"image"``; target is the camera index as a string, the URL as given, or
        the path (``~`` expanded). Video and image files are told apart by suffix
        (:data:`VIDEO_SUFFIXES`, :data:`~maskwatch.ops.image.IMAGE_SUFFIXES`); files with
        another suffix by content, trying image first.

    Raises:
        SourceError: empty spec, unsupported URL scheme, missing path, or a file that
            is neither an image nor a video.

    Example:
        >>> parse_source("0"), parse_source("rtsp://cam.local/live")
        (('camera', '0'), ('url', 'rtsp://cam.local/live'))
    """
    spec = os.fspath(spec) if isinstance(spec, os.PathLike) else spec
    if not isinstance(spec, str) or not spec.strip():
        raise SourceError(
            "no source given: pass a camera index (0), a video or image file, a folder, "
            "or an rtsp:// or http:// URL"
        )
    spec = spec.strip()
    m = _CAMERA_RE.fullmatch(spec)
    if m:
        return "camera", str(int(m.group(1)))
    m = _SCHEME_RE.match(spec)
    if m:
        scheme = m.group(1).lower()
        if scheme not in URL_SCHEMES:
            raise SourceError(
                f"unsupported URL scheme '{scheme}://' in {mask_url(spec)}: "
                f"use {', '.join(s + '://' for s in URL_SCHEMES)}, a camera index or a file path"
            )
        if not _url_host(spec):
            raise SourceError(f"{mask_url(spec)} is not a valid URL: it names no host")
        return "url", spec
    try:
        path = Path(spec).expanduser()
        exists = path.exists()
        is_dir = path.is_dir()
        is_file = path.is_file()
    except (OSError, ValueError) as exc:  # NUL bytes, names too long, ...
        raise SourceError(f"{spec}: not a usable path ({exc})") from exc
    if not exists:
        raise SourceError(f"{spec}: no such file or folder")
    if is_dir:
        return "folder", str(path)
    if not is_file:
        raise SourceError(f"{spec}: not a regular file or folder")
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video", str(path)
    if suffix in IMAGE_SUFFIXES:
        return "image", str(path)
    if _looks_like_image(path):
        return "image", str(path)
    if _looks_like_video(path):
        return "video", str(path)
    raise SourceError(f"{spec}: not a readable image or video (unknown format or corrupt data)")


def _url_host(url: str) -> str:
    """The URL's host name, or "" when it has none or cannot be parsed."""
    try:
        return urlsplit(url).hostname or ""
    except ValueError:  # bad port number, unbalanced brackets
        return ""


def _fmt_seconds(seconds: float) -> str:
    """``2.0``, ``0.5``, ``0.05``: at least one decimal, at most two."""
    text = f"{seconds:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _too_big_message(image: np.ndarray, max_pixels: int) -> str | None:
    h, w = image.shape[:2]
    if h * w > max_pixels:
        return f"frame of {w}x{h} pixels is over the limit of {max_pixels:,} pixels"
    return None


def _valid_frame(ok: bool, image: np.ndarray | None) -> bool:
    return bool(ok) and image is not None and image.ndim >= 2 and image.size > 0


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """Backends normally give BGR uint8; some cameras give gray or 16-bit."""
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return image
    return to_bgr_uint8(image)


class FrameSource:
    """Base of all sources: iterate it for :class:`Frame` and :class:`SourceProblem`.

    A source is read once, like a file: a second ``for`` loop continues where the
    first stopped. Use it as a context manager, or call :meth:`close`, to release the
    file, camera or connection; :meth:`close` may be called from another thread to
    stop a live source (it wakes a reconnection wait).

    Attributes:
        kind: ``"image"``, ``"folder"``, ``"video"``, ``"camera"`` or ``"url"``.
    """

    kind: str = ""

    def __init__(self, source: str, *, max_pixels: int, logger: logging.Logger | None) -> None:
        if max_pixels <= 0:
            raise ValueError(f"max_pixels must be positive, got {max_pixels}")
        self._source = source
        self._max_pixels = int(max_pixels)
        self._log = logger or _log
        self._closed = threading.Event()
        self._iterator: Iterator[Frame | SourceProblem] | None = None

    # -- public interface -------------------------------------------------------------
    @property
    def source(self) -> str:
        """The name used in :attr:`Frame.source` (path, ``camera:N`` or masked URL)."""
        return self._source

    @property
    def is_live(self) -> bool:
        """True for cameras and streams: no end, no seeking, timestamps from the clock."""
        return False

    @property
    def fps(self) -> float | None:
        """Frames per second as stated by the file or device, or None when unknown."""
        return None

    @property
    def frame_count(self) -> int | None:
        """How many items to expect (for progress bars), or None when unknown or live.

        For videos this is the container's figure, which may be an estimate.
        """
        return None

    @property
    def description(self) -> str:
        """One line for logs and the UI, e.g. ``video clip.mp4 (640x360, 30 fps, 275 frames)``."""
        return f"{self.kind} {self._source}"

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed.is_set()

    def close(self) -> None:
        """Release the underlying file, device or connection; safe to call twice."""
        self._closed.set()
        self._release()

    def __iter__(self) -> Iterator[Frame | SourceProblem]:
        if self._iterator is None:
            self._iterator = self._items()
        return self._iterator

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"

    # -- for subclasses ----------------------------------------------------------------
    def _items(self) -> Iterator[Frame | SourceProblem]:
        raise NotImplementedError

    def _release(self) -> None:
        """Free resources; called by :meth:`close`."""


class ImageSource(FrameSource):
    """A single image file: one :class:`Frame` with index 0 and timestamp 0.0."""

    kind = "image"

    def __init__(
        self,
        path: str,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        logger: logging.Logger | None = None,
    ):
        super().__init__(path, max_pixels=max_pixels, logger=logger)
        try:
            self._image: np.ndarray | None = read_image(path, max_pixels=self._max_pixels,
                                                        min_side=MIN_FACE_IMAGE_SIDE)
        except ImageError as exc:
            raise SourceError(str(exc)) from exc
        self._shape = self._image.shape
        self._name = Path(path).name

    @property
    def frame_count(self) -> int | None:
        return 1

    @property
    def description(self) -> str:
        h, w = self._shape[:2]
        return f"image {self._source} ({w}x{h})"

    def _items(self) -> Iterator[Frame | SourceProblem]:
        if self._image is not None and not self.closed:
            image, self._image = self._image, None
            yield Frame(image=image, index=0, timestamp=0.0, source=self._source, name=self._name)

    def _release(self) -> None:
        self._image = None


class FolderSource(FrameSource):
    """Every image file under a folder (recursive, sorted by path).

    A file that cannot be decoded, or is over ``max_pixels``, yields a
    :class:`SourceProblem` and the rest of the folder is read.
    """

    kind = "folder"

    def __init__(
        self,
        path: str,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        logger: logging.Logger | None = None,
    ):
        super().__init__(path, max_pixels=max_pixels, logger=logger)
        self._root = Path(path)
        try:
            self._files = list_images(self._root)
        except OSError as exc:
            raise SourceError(f"{path}: cannot list the folder ({exc.strerror or exc})") from exc
        if not self._files:
            raise SourceError(
                f"{path}: no image files in this folder or below it "
                f"(looked for {' '.join(IMAGE_SUFFIXES)})"
            )

    @property
    def frame_count(self) -> int | None:
        return len(self._files)

    @property
    def files(self) -> list[Path]:
        """The image files that will be read, in order."""
        return list(self._files)

    @property
    def description(self) -> str:
        return f"folder {self._source} ({len(self._files)} images)"

    def _items(self) -> Iterator[Frame | SourceProblem]:
        for index, file in enumerate(self._files):
            if self.closed:
                return
            name = file.relative_to(self._root).as_posix()
            try:
                image = read_image(file, max_pixels=self._max_pixels, min_side=MIN_FACE_IMAGE_SIDE)
            except ImageError as exc:
                yield SourceProblem(source=self._source, name=name, message=str(exc))
                continue
            yield Frame(
                image=image, index=index, timestamp=float(index), source=self._source, name=name
            )


class _CaptureSource(FrameSource):
    """Shared handling of one ``cv2.VideoCapture`` (file, camera or URL)."""

    def __init__(self, source: str, *, max_pixels: int, logger: logging.Logger | None) -> None:
        super().__init__(source, max_pixels=max_pixels, logger=logger)
        self._cap: cv2.VideoCapture | None = None
        # Held while the capture is used, so that close() from another thread never
        # releases it in the middle of a read.
        self._cap_lock = threading.Lock()
        self._width = 0
        self._height = 0
        self._fps: float | None = None
        self._frame_count: int | None = None

    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def frame_count(self) -> int | None:
        return self._frame_count

    def _read(self) -> tuple[bool, np.ndarray | None]:
        """One ``cap.read()``; a closed source or an OpenCV exception reads as failure."""
        with self._cap_lock:
            cap = self._cap
            if cap is None or self.closed:
                return False, None
            try:
                ok, image = cap.read()
            except cv2.error as exc:
                self._log.debug("%s: read failed: %s", self._source, exc)
                return False, None
        if not _valid_frame(ok, image):
            return False, None
        return True, image

    def _take_properties(self, cap: cv2.VideoCapture) -> None:
        fps = cap.get(cv2.CAP_PROP_FPS)
        self._fps = float(fps) if math.isfinite(fps) and 0 < fps < 1000 else None
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self._frame_count = int(round(count)) if math.isfinite(count) and count >= 1 else None

    def _release(self) -> None:
        with self._cap_lock:
            cap, self._cap = self._cap, None
        if cap is not None:
            try:
                cap.release()
            except cv2.error:  # pragma: no cover - release of a broken capture
                pass


class VideoFileSource(_CaptureSource):
    """A video file read in order, with timestamps from the file.

    A truncated or damaged file stops at the last frame that decodes; when the
    container promised noticeably more frames, a :class:`SourceProblem` saying that it
    ended early is the last item.
    """

    kind = "video"

    def __init__(
        self,
        path: str,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        logger: logging.Logger | None = None,
    ):
        super().__init__(path, max_pixels=max_pixels, logger=logger)
        try:
            cap = cv2.VideoCapture(path)
        except cv2.error as exc:
            raise SourceError(
                f"{path}: not a readable video ({getattr(exc, 'err', '') or exc})"
            ) from exc
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"{path}: not a readable video "
                "(OpenCV cannot open it: corrupt, truncated or unsupported format)"
            )
        self._cap = cap
        self._take_properties(cap)
        ok, first = self._read()
        if not ok or first is None:
            self._release()
            raise SourceError(f"{path}: not a readable video (no frame could be decoded)")
        too_big = _too_big_message(first, self._max_pixels)
        if too_big:
            self._release()
            raise SourceError(f"{path}: {too_big}")
        self._first: np.ndarray | None = first
        self._first_pos = self._position_s()
        self._height, self._width = first.shape[:2]

    @property
    def description(self) -> str:
        fps = f"{self._fps:g} fps" if self._fps else "unknown fps"
        count = f"{self._frame_count} frames" if self._frame_count else "unknown length"
        return f"video {self._source} ({self._width}x{self._height}, {fps}, {count})"

    def _position_s(self) -> float | None:
        with self._cap_lock:
            if self._cap is None:
                return None
            try:
                ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
            except cv2.error:
                return None
        return ms / 1000.0 if math.isfinite(ms) and ms >= 0 else None

    def _timestamp(self, index: int, position: float | None, previous: float | None) -> float:
        """The container's position when it is sane, else ``index / fps``; always increasing."""
        if position is not None and (previous is None or position > previous):
            return position
        step = 1.0 / (self._fps or _FALLBACK_FPS)
        estimate = index * step
        if previous is None or estimate > previous:
            return estimate
        return previous + step

    def _items(self) -> Iterator[Frame | SourceProblem]:
        index = 0
        previous: float | None = None
        image, position = self._first, self._first_pos
        self._first = None
        try:
            while image is not None and not self.closed:
                timestamp = self._timestamp(index, position, previous)
                too_big = _too_big_message(image, self._max_pixels)
                if too_big:
                    yield SourceProblem(self._source, "", f"frame {index}: {too_big}")
                else:
                    yield Frame(
                        image=_as_bgr(image), index=index, timestamp=timestamp, source=self._source
                    )
                previous = timestamp
                index += 1
                ok, image = self._read()
                if not ok:
                    image = None
                    break
                position = self._position_s()
            if self.closed:
                return
            expected = self._frame_count
            if expected is not None and index < expected - _END_TOLERANCE_FRAMES:
                message = (
                    f"video ended early after {index} of {expected} frames "
                    "(the file is truncated or damaged)"
                )
                self._log.warning("%s: %s", self._source, message)
                yield SourceProblem(self._source, "", message)
        finally:
            self._release()


class LiveSource(_CaptureSource):
    """A camera or network stream, reconnecting with exponential back-off when lost.

    Frame timestamps are ``time.monotonic()`` seconds since the source was opened;
    indices keep counting across reconnections.

    Attributes:
        reconnecting: while the source is lost and being reopened, what is happening
            (``"lost stream URL; reconnecting in 2 s (attempt 3)"``), for a caller that
            shows it while the iterator waits; ``""`` while connected.
    """

    def __init__(
        self,
        kind: str,
        target: str,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        reconnect: bool = True,
        max_retries: int | None = None,
        backoff: tuple[float, float] = (0.5, 8.0),
        read_timeout_s: float = 10.0,
        logger: logging.Logger | None = None,
    ) -> None:
        if kind not in ("camera", "url"):
            raise ValueError(f"kind must be 'camera' or 'url', got {kind!r}")
        source = f"camera:{int(target)}" if kind == "camera" else mask_url(target)
        super().__init__(source, max_pixels=max_pixels, logger=logger)
        if len(backoff) != 2 or not 0 < backoff[0] <= backoff[1]:
            raise ValueError(
                f"backoff must be (first, longest) seconds with 0 < first <= longest, got {backoff}"
            )
        if max_retries is not None and max_retries < 0:
            raise ValueError(f"max_retries must be None or >= 0, got {max_retries}")
        if read_timeout_s <= 0:
            raise ValueError(f"read_timeout_s must be positive, got {read_timeout_s}")
        self.kind = kind
        self.reconnecting = ""
        self._target = target
        self._reconnect = reconnect
        self._max_retries = max_retries
        self._backoff = (float(backoff[0]), float(backoff[1]))
        self._timeout_ms = int(round(read_timeout_s * 1000))
        self._t0 = time.monotonic()
        first, why = self._connect()
        if first is None:
            raise SourceError(why)
        too_big = _too_big_message(first, self._max_pixels)
        if too_big:
            self._release()
            raise SourceError(f"{self._source}: {too_big}")
        self._first: np.ndarray | None = first
        self._first_time = time.monotonic() - self._t0
        self._height, self._width = first.shape[:2]

    @property
    def is_live(self) -> bool:
        return True

    @property
    def frame_count(self) -> int | None:
        return None

    @property
    def description(self) -> str:
        fps = f", {self._fps:g} fps" if self._fps else ""
        what = "camera" if self.kind == "camera" else "stream"
        name = self._source.split(":", 1)[1] if self.kind == "camera" else self._source
        return f"{what} {name} ({self._width}x{self._height}{fps})"

    def _open_capture(self) -> cv2.VideoCapture:
        if self.kind == "camera":
            return cv2.VideoCapture(int(self._target))
        params: list[int] = []
        for name in ("CAP_PROP_OPEN_TIMEOUT_MSEC", "CAP_PROP_READ_TIMEOUT_MSEC"):
            prop = getattr(cv2, name, None)
            if prop is not None:
                params += [int(prop), self._timeout_ms]
        try:
            return cv2.VideoCapture(self._target, cv2.CAP_FFMPEG, params)
        except TypeError:  # OpenCV older than 4.5.2 takes no open parameters
            return cv2.VideoCapture(self._target, cv2.CAP_FFMPEG)

    def _connect(self) -> tuple[np.ndarray | None, str]:
        """Open the device or URL and read one frame.

        Returns:
            ``(first_frame, "")`` on success, ``(None, reason)`` otherwise.
        """
        if self.kind == "camera":
            failed = f"camera {int(self._target)} not found or busy"
        else:
            failed = (
                f"cannot open stream {self._source}: unreachable, refused or not a video "
                f"stream (waited up to {_fmt_seconds(self._timeout_ms / 1000)} s)"
            )
        try:
            cap = self._open_capture()
        except cv2.error as exc:
            self._log.debug("%s: open failed: %s", self._source, exc)
            return None, failed
        if not cap.isOpened():
            cap.release()
            return None, failed
        with self._cap_lock:
            if self.closed:
                cap.release()
                return None, f"{self._source}: closed"
            self._cap = cap
        ok, frame = self._read()
        if not ok or frame is None:
            self._release()
            if self.kind == "camera":
                return None, failed
            return None, f"stream {self._source} opened but sent no frame"
        self._take_properties(cap)
        self._frame_count = None
        return frame, ""

    def _items(self) -> Iterator[Frame | SourceProblem]:
        index = 0
        image, stamp = self._first, self._first_time
        self._first = None
        try:
            while not self.closed:
                if image is not None:
                    too_big = _too_big_message(image, self._max_pixels)
                    if too_big:
                        yield SourceProblem(self._source, "", f"frame {index} refused: {too_big}")
                    else:
                        yield Frame(
                            image=_as_bgr(image), index=index, timestamp=stamp, source=self._source
                        )
                    index += 1
                ok, image = self._read()
                stamp = time.monotonic() - self._t0
                if ok:
                    continue
                if self.closed:
                    return
                self._release()
                image, gave_up = self._reconnect_with_backoff()
                if image is None:
                    if gave_up:
                        yield SourceProblem(self._source, "", gave_up)
                    return
                stamp = time.monotonic() - self._t0
        finally:
            self._release()

    def _reconnect_with_backoff(self) -> tuple[np.ndarray | None, str]:
        """Try to reopen until it works, the retries run out or the source is closed.

        Returns:
            ``(first_frame, "")`` once reconnected, ``(None, message)`` when giving up,
            ``(None, "")`` when closed meanwhile.
        """
        if not self._reconnect or self._max_retries == 0:
            message = f"lost stream {self._source}; not reconnecting (reconnection is off)"
            self._log.warning("%s", message)
            return None, message
        delay = self._backoff[0]
        attempt = 0
        while not self.closed:
            attempt += 1
            if self._max_retries is not None and attempt > self._max_retries:
                message = (
                    f"lost stream {self._source}; gave up after {self._max_retries} "
                    f"reconnection attempt{'s' if self._max_retries != 1 else ''}"
                )
                self._log.error("%s", message)
                self.reconnecting = ""
                return None, message
            wait = _fmt_seconds(delay)
            self.reconnecting = (f"lost stream {self._source}; "
                                 f"reconnecting in {wait} s (attempt {attempt})")
            self._log.warning("%s", self.reconnecting)
            if self._closed.wait(delay):
                return None, ""
            frame, why = self._connect()
            if frame is not None:
                self.reconnecting = ""
                self._log.info(
                    "reconnected to %s after %d attempt%s",
                    self._source,
                    attempt,
                    "s" if attempt != 1 else "",
                )
                return frame, ""
            self._log.debug("%s: reconnection attempt %d failed: %s", self._source, attempt, why)
            delay = min(delay * 2.0, self._backoff[1])
        return None, ""


def open_source(
    spec: str | os.PathLike[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    reconnect: bool = True,
    max_retries: int | None = None,
    backoff: tuple[float, float] = (0.5, 8.0),
    read_timeout_s: float = 10.0,
    logger: logging.Logger | None = None,
) -> FrameSource:
    """Open a camera, stream, video, image or folder for reading frames.

    Args:
        spec: see :func:`parse_source`: ``"0"``, ``"rtsp://user:pw@host/path"``,
            ``"http://host/video.mjpg"``, ``"clip.mp4"``, ``"photo.jpg"``, ``"photos/"``.
        max_pixels: refuse images and frames with more pixels (width * height) than
            this. Folder images and live frames over it become :class:`SourceProblem`;
            a single image, or a video or stream whose first frame is over it, raises.
        reconnect: live sources only: reopen the camera or URL when reads fail.
        max_retries: reconnection attempts in a row before giving up (a final
            :class:`SourceProblem`, then the iteration ends); None retries forever.
        backoff: ``(first, longest)`` seconds between attempts; the wait doubles
            from ``first`` up to ``longest`` and starts again after a success.
        read_timeout_s: URLs only: how long opening the stream or waiting for one
            frame may take before it counts as failed (FFMPEG open/read timeouts).
        logger: where to log reconnections; default ``logging.getLogger("maskwatch.sources")``.

    Returns:
        A :class:`FrameSource`; iterate it, and close it (or use ``with``).

    Raises:
        SourceError: the source cannot be used at all; the message is one sentence
            naming it (URLs with the password masked).
    """
    kind, target = parse_source(spec)
    try:
        if kind == "image":
            return ImageSource(target, max_pixels=max_pixels, logger=logger)
        if kind == "folder":
            return FolderSource(target, max_pixels=max_pixels, logger=logger)
        if kind == "video":
            return VideoFileSource(target, max_pixels=max_pixels, logger=logger)
        return LiveSource(
            kind,
            target,
            max_pixels=max_pixels,
            reconnect=reconnect,
            max_retries=max_retries,
            backoff=backoff,
            read_timeout_s=read_timeout_s,
            logger=logger,
        )
    except OSError as exc:  # permissions and the like, raised below OpenCV or PIL
        shown = mask_url(target) if kind == "url" else target
        raise SourceError(f"{shown}: cannot open ({exc.strerror or exc})") from exc
