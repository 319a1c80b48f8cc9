"""Reading images by content, whatever their file name says.

Real datasets hold PNG, WEBP, RGBA, palette and grayscale files under ``.jpg`` names,
and 16-bit images from some cameras. Everything is turned into BGR uint8 here, once,
so that the rest of the code sees one format.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np

#: Default limit on decoded pixels (width * height): about a 64-megapixel photo.
DEFAULT_MAX_PIXELS = 64_000_000
#: Shortest side, in pixels, of an image worth looking for faces in (YuNet finds
#: faces from about 10 px); smaller ones are refused by the analysis sources.
MIN_FACE_IMAGE_SIDE = 8

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


class ImageError(ValueError):
    """An image that cannot be used: unreadable, truncated, empty or too large."""


def _probe_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the file header without decoding the pixels, or None."""
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception:  # noqa: BLE001 - any failure means "unknown", decoding decides
        return None


def to_bgr_uint8(image: np.ndarray) -> np.ndarray:
    """Convert a decoded array (gray, BGRA, 16-bit, float) to BGR uint8.

    Transparent pixels of BGRA images are composited on white, the usual look of
    such images in a viewer.
    """
    img = np.asarray(image)
    if img.dtype == np.uint16:
        img = (img / 257.0).round().astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        scale = 255.0 if img.size and float(np.nanmax(img)) <= 1.0 else 1.0
        img = np.clip(np.nan_to_num(img) * scale, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 4:
        alpha = img[:, :, 3:4].astype(np.float32) / 255.0
        rgb = img[:, :, :3].astype(np.float32)
        return (rgb * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    if img.ndim == 3 and img.shape[2] == 3:
        return np.ascontiguousarray(img)
    raise ImageError(f"unsupported image shape {img.shape}")


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "image",
                 min_side: int = 1) -> np.ndarray:
    """Decode image bytes by content into a BGR uint8 array.

    Args:
        data: the encoded file (JPEG, PNG, WEBP, BMP, TIFF, GIF first frame).
        max_pixels: refuse images with more pixels than this, checked from the header
            before the pixels are decoded.
        name: how to call the image in error messages (usually its path).
        min_side: refuse images whose width or height is below this many pixels
            (:data:`MIN_FACE_IMAGE_SIDE` where faces are looked for).

    Returns:
        (H, W, 3) BGR uint8 array.

    Raises:
        ImageError: empty, undecodable, truncated, zero-size, too-small or too-large images.
    """
    if not data:
        raise ImageError(f"{name}: empty file")
    size = _probe_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise ImageError(
            f"{name}: {size[0]}x{size[1]} pixels is over the limit of {max_pixels:,} pixels"
        )
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        img = _decode_with_pillow(data)
    if img is None:
        raise ImageError(f"{name}: not a readable image (unknown format or corrupt data)")
    if img.ndim < 2 or img.shape[0] == 0 or img.shape[1] == 0:
        raise ImageError(f"{name}: image has no pixels")
    if img.shape[0] * img.shape[1] > max_pixels:
        raise ImageError(f"{name}: {img.shape[1]}x{img.shape[0]} pixels is over the limit of {max_pixels:,}")
    if min(img.shape[:2]) < min_side:
        raise ImageError(f"{name}: {img.shape[1]}x{img.shape[0]} pixels is too small to hold a face "
                         f"(at least {min_side}x{min_side})")
    return to_bgr_uint8(img)


def _decode_with_pillow(data: bytes) -> np.ndarray | None:
    """Fallback for formats OpenCV lacks (GIF, some palette PNGs)."""
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in ("P", "PA", "LA", "RGBA"):
                rgba = np.asarray(im.convert("RGBA"))
                return cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA)
            if im.mode in ("I;16", "I;16B", "I"):
                return np.asarray(im).astype(np.uint16)
            return cv2.cvtColor(np.asarray(im.convert("RGB")), cv2.COLOR_RGB2BGR)
    except Exception:  # noqa: BLE001
        return None


def read_image(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS,
               min_side: int = 1) -> np.ndarray:
    """Read an image file by content into a BGR uint8 array.

    Raises:
        ImageError: missing, unreadable, corrupt, empty, too-small (``min_side``, see
            :func:`decode_image`) or too-large files.
    """
    p = Path(path)
    if not p.exists():
        raise ImageError(f"{p}: no such file")
    if not p.is_file():
        raise ImageError(f"{p}: not a file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ImageError(f"{p}: cannot read ({exc.strerror})") from exc
    return decode_image(data, max_pixels=max_pixels, name=str(p), min_side=min_side)


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted, by suffix."""
    root = Path(folder)
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def list_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Every visible file under ``folder`` (recursive), sorted: for datasets, whose
    images are decoded by content whatever their suffix (``x.jpg_1088Wx1632H``)."""
    root = Path(folder)
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
