"""Checking uploaded images: size, type by content, pixel count.

Each failure is an :class:`UploadError` with an HTTP status and one sentence; nothing
from an upload ever names a file on the server.
"""

from __future__ import annotations

import asyncio
import collections
import weakref

import numpy as np

from maskwatch.ops.image import ImageError, ImageTooLarge, decode_image, probe_image

#: Pixels decoded at the same time by one server, in images of the largest accepted
#: size (``max_pixels``). A decode costs up to about 7 bytes a pixel (an RGBA image:
#: Pillow's 4-byte copy and the 3-byte BGR result; 280 MB at the default limit of 40 M
#: pixels), so N big uploads at once cost one decode, not N: the others wait for their
#: turn, their bytes already read and checked. Small images share the budget, so a
#: live frame (0.3 M pixels) is decoded at once beside a 36 M pixel upload.
MAX_CONCURRENT_DECODES = 1
# One budget per event loop: asyncio futures belong to the loop that made them.
_budgets: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, PixelBudget]] = (
    weakref.WeakKeyDictionary()
)


class PixelBudget:
    """A count of pixels being decoded, never over ``capacity`` (one event loop).

    :meth:`acquire` waits until the pixels fit; when pixels are given back, waiters are
    served in order, but one that fits does not wait behind one that does not (small
    live frames pass while a big upload waits for a big one to finish).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.used = 0
        self._waiting: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    async def acquire(self, pixels: int) -> int:
        """Wait until ``pixels`` (at most ``capacity``) fit; returns the count taken,
        to give back to :meth:`release`."""
        n = max(1, min(int(pixels), self.capacity))
        if self.used + n <= self.capacity:
            self.used += n
            return n
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append((n, turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release(n)  # granted just as the caller went away
            else:
                self._waiting.remove((n, turn))
                self._grant()  # a big waiter leaving may let smaller ones in
            raise
        return n

    def release(self, n: int) -> None:
        """Give back pixels taken by :meth:`acquire`; wakes the waiters that now fit."""
        self.used -= n
        self._grant()

    def _grant(self) -> None:
        for item in list(self._waiting):
            n, turn = item
            if turn.done():
                self._waiting.remove(item)
            elif self.used + n <= self.capacity:
                self.used += n
                self._waiting.remove(item)
                turn.set_result(None)


def _budget(max_pixels: int) -> PixelBudget:
    per_loop = _budgets.setdefault(asyncio.get_running_loop(), {})
    if max_pixels not in per_loop:
        per_loop[max_pixels] = PixelBudget(MAX_CONCURRENT_DECODES * max_pixels)
    return per_loop[max_pixels]


#: Leading bytes of the image formats accepted, and their names.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


class UploadError(Exception):
    """A refused upload: ``status`` is the HTTP code, ``str(error)`` the reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def image_kind(data: bytes) -> str | None:
    """The image format named by the first bytes (JPEG, PNG, GIF, BMP, TIFF, WEBP), or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    return None


def _check_bytes(data: bytes, name: str, max_bytes: int) -> str:
    """The checks that need no decoding (400 empty, 413 bytes, 415 not an image);
    returns the format named by the content."""
    if not data:
        raise UploadError(400, f"{name}: the file is empty")
    if len(data) > max_bytes:
        raise UploadError(413, f"{name}: {len(data):,} bytes is over the limit of "
                               f"{max_bytes:,} bytes")
    kind = image_kind(data)
    if kind is None:
        raise UploadError(415, f"{name}: not an image (JPEG, PNG, WEBP, GIF, BMP or TIFF expected)")
    return kind


def _header_pixels(data: bytes, *, name: str, max_bytes: int, max_pixels: int) -> int:
    """Every check made before decoding (bytes, format, header, pixel count); returns
    the pixel count the header gives."""
    kind = _check_bytes(data, name, max_bytes)
    try:
        header = probe_image(data, name=name, max_pixels=max_pixels)
    except ImageTooLarge as exc:
        raise UploadError(413, str(exc)) from exc
    if header is None:  # a header Pillow cannot read is a corrupt file
        raise UploadError(422, f"{name}: a {kind} file that cannot be read (corrupt or truncated)")
    if header.pixels > max_pixels:
        raise UploadError(413, f"{name}: {header.width}x{header.height} pixels is over the "
                               f"limit of {max_pixels:,} pixels")
    return header.pixels


def check_image(data: bytes, *, name: str = "upload", max_bytes: int,
                max_pixels: int) -> np.ndarray:
    """Decode uploaded bytes into a BGR uint8 image, or raise :class:`UploadError`.

    Args:
        data: the uploaded file.
        name: how to call it in messages (the client's file name; never opened).
        max_bytes: size limit, bytes (413 over it).
        max_pixels: width x height limit, read from the header before decoding (413).

    Raises:
        UploadError: 400 empty, 413 too large in bytes or in pixels (over ``max_pixels``
            or over the decoder's own limit, Pillow's decompression-bomb check among
            them), 415 not an image format (checked from the content, not the name),
            422 a corrupt image.
    """
    _header_pixels(data, name=name, max_bytes=max_bytes, max_pixels=max_pixels)
    try:
        return decode_image(data, max_pixels=max_pixels, name=name)
    except ImageTooLarge as exc:
        raise UploadError(413, str(exc)) from exc
    except ImageError as exc:
        raise UploadError(422, str(exc)) from exc


async def decode_upload(data: bytes, *, name: str = "upload", max_bytes: int,
                        max_pixels: int) -> np.ndarray:
    """:func:`check_image` on worker threads, within this server's :class:`PixelBudget`
    (:data:`MAX_CONCURRENT_DECODES` images of ``max_pixels``).

    The header is read first (on a thread: a file of many small chunks can take a
    while), refusals cost no turn, and the turn is held until the decode has finished,
    even if the request is cancelled meanwhile (a thread cannot be stopped).

    Raises:
        UploadError: as :func:`check_image`.
    """
    _check_bytes(data, name, max_bytes)
    pixels = await asyncio.to_thread(_header_pixels, data, name=name, max_bytes=max_bytes,
                                     max_pixels=max_pixels)
    budget = _budget(max_pixels)
    taken = await budget.acquire(pixels)
    try:
        job = asyncio.ensure_future(asyncio.to_thread(check_image, data, name=name,
                                                      max_bytes=max_bytes,
                                                      max_pixels=max_pixels))
    except BaseException:
        budget.release(taken)
        raise

    def done(fut: asyncio.Future[np.ndarray]) -> None:
        budget.release(taken)
        if not fut.cancelled():
            fut.exception()  # retrieved here too, for when the caller has gone

    job.add_done_callback(done)
    return await asyncio.shield(job)


async def read_limited(upload: object, max_bytes: int) -> bytes:
    """Read an upload (a Starlette ``UploadFile``) but never more than ``max_bytes + 1``."""
    data = await upload.read(max_bytes + 1)  # type: ignore[attr-defined]
    return bytes(data)
