"""Checking uploaded images: size, type by content, pixel count.

Each failure is an :class:`UploadError` with an HTTP status and one sentence; nothing
from an upload ever names a file on the server.
"""

from __future__ import annotations

import io

import numpy as np

from maskwatch.ops.image import ImageError, decode_image

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


def check_image(data: bytes, *, name: str = "upload", max_bytes: int, max_pixels: int) -> np.ndarray:
    """Decode uploaded bytes into a BGR uint8 image, or raise :class:`UploadError`.

    Args:
        data: the uploaded file.
        name: how to call it in messages (the client's file name; never opened).
        max_bytes: size limit, bytes (413 over it).
        max_pixels: width x height limit, read from the header before decoding (413).

    Raises:
        UploadError: 400 empty, 413 too large in bytes or pixels, 415 not an image
            format (checked from the content, not the name), 422 a corrupt image.
    """
    if not data:
        raise UploadError(400, f"{name}: the file is empty")
    if len(data) > max_bytes:
        raise UploadError(413, f"{name}: {len(data):,} bytes is over the limit of {max_bytes:,} bytes")
    kind = image_kind(data)
    if kind is None:
        raise UploadError(415, f"{name}: not an image (JPEG, PNG, WEBP, GIF, BMP or TIFF expected)")
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Exception as exc:  # noqa: BLE001 - a header Pillow cannot read is a corrupt file
        raise UploadError(422, f"{name}: a {kind} file that cannot be read (corrupt or truncated)") from exc
    if w * h > max_pixels:
        raise UploadError(413, f"{name}: {w}x{h} pixels is over the limit of {max_pixels:,} pixels")
    try:
        return decode_image(data, max_pixels=max_pixels, name=name)
    except ImageError as exc:
        raise UploadError(422, str(exc)) from exc


async def read_limited(upload: object, max_bytes: int) -> bytes:
    """Read an upload (a Starlette ``UploadFile``) but never more than ``max_bytes + 1``."""
    data = await upload.read(max_bytes + 1)  # type: ignore[attr-defined]
    return bytes(data)
