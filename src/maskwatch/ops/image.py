"""Reading images by content, whatever their file name says.

Real datasets hold PNG, WEBP, RGBA, palette and grayscale files under ``.jpg`` names,
and 16-bit images from some cameras. Everything is turned into BGR uint8 here, once,
so that the rest of the code sees one format.

Memory: decoding costs the BGR uint8 result (3 bytes a pixel) plus one copy of the
pixels as the decoder holds them (OpenCV's 3 bytes, or Pillow's 4 for RGBA); 16-bit
and alpha images are turned into 8-bit BGR by integer arithmetic in bands of rows,
never through a full float copy (a 6000x6000 16-bit RGBA PNG of 0.5 MB cost 2.5 GB
that way). The pixel count is read from the header and checked before decoding.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from maskwatch.config import DEFAULT_MAX_PIXELS as DEFAULT_MAX_PIXELS  # one default, set there

#: Shortest side, in pixels, of an image worth looking for faces in (YuNet finds
#: faces from about 10 px); smaller ones are refused by the analysis sources.
MIN_FACE_IMAGE_SIDE = 8

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")

#: Pixels converted at a time (a band of rows) when 16-bit, float or alpha images are
#: turned into BGR uint8: the temporaries stay under 2 MB whatever the image size (and
#: bands this small, in cache, convert faster than larger ones).
BAND_PIXELS = 1 << 16
#: Pillow modes with transparency: composited on white from Pillow's 8-bit decode.
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
#: Pillow modes of one deep channel (16-bit, 32-bit integer, float): decoded at their
#: depth (2 or 4 bytes a pixel) and scaled exactly as :func:`to_bgr_uint8` does.
_DEEP_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_READ_COLOR = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION  # as IMREAD_UNCHANGED did


class ImageError(ValueError):
    """An image that cannot be used: unreadable, truncated, empty or too large."""


class ImageTooLarge(ImageError):
    """An image with more pixels than allowed, or than the decoder accepts (refused
    before its pixels are decoded): HTTP 413 in the web app, exit code 2 in the CLI."""


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says, read without decoding its pixels.

    Attributes:
        width, height: size in pixels.
        format: Pillow's name of the format (PNG, JPEG, ...).
        mode: Pillow's mode (RGB, RGBA, P, I;16, ...).
        transparent: True when the image has an alpha channel or a transparent colour.
    """

    width: int
    height: int
    format: str
    mode: str
    transparent: bool

    @property
    def pixels(self) -> int:
        return self.width * self.height


_PIL_READY = False
#: Pillow's image memory block, bytes. Pillow's default (16 MiB) is under glibc's
#: dynamic mmap threshold (up to 32 MiB) once the process has freed larger buffers, so
#: a big image's blocks came from the heap of the decoding thread's arena and stayed
#: resident after it was freed (+155 MB for each worker thread that had decoded a
#: 36 MP RGBA upload). One block per image, mapped and unmapped whole, does not stay.
_PIL_BLOCK_SIZE = 256 << 20


def _pil() -> Any:
    """``PIL.Image``, set up once: its DecompressionBombWarning silenced (decode_image
    checks the pixel count against its own limit right after opening, and the CLI must
    print one line, not a warning as well) and big images allocated in one block."""
    global _PIL_READY
    import warnings

    from PIL import Image

    if not _PIL_READY:
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        core = Image.core
        if hasattr(core, "set_block_size") and core.get_block_size() < _PIL_BLOCK_SIZE:
            core.set_block_size(_PIL_BLOCK_SIZE)
        _PIL_READY = True
    return Image


def _too_large(name: str, size: str | None, limit: int) -> ImageTooLarge:
    """``name: SIZE pixels is over the limit of LIMIT pixels`` (SIZE: "WxH" or a count)."""
    if size is None:
        return ImageTooLarge(f"{name}: the image is over the limit of {limit:,} pixels")
    return ImageTooLarge(f"{name}: {size} pixels is over the limit of {limit:,} pixels")


def probe_image(data: bytes, *, name: str = "image",
                max_pixels: int | None = None) -> ImageHeader | None:
    """Read the header of an encoded image (Pillow, no pixels decoded).

    Args:
        data: the encoded file.
        name: how to call the image in error messages.
        max_pixels: limit used in the message when Pillow refuses the image as a
            decompression bomb (over 2 x ``Image.MAX_IMAGE_PIXELS``, about 179 M).

    Returns:
        The header, or None when Pillow cannot read it (unknown format or corrupt).

    Raises:
        ImageTooLarge: the image is over Pillow's own pixel limit.
    """
    Image = _pil()
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            transparent = im.mode in _ALPHA_MODES or "transparency" in im.info
            return ImageHeader(int(w), int(h), str(im.format or ""), str(im.mode),
                               bool(transparent))
    except Image.DecompressionBombError as exc:
        # "Image size (400000000 pixels) exceeds limit of 178956970 pixels, ..."
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = int(found.group(1)) if found else None
        limit = 2 * int(Image.MAX_IMAGE_PIXELS or 0)
        if max_pixels is not None and pixels is not None and pixels > max_pixels:
            limit = min(limit, max_pixels) if limit else max_pixels
        raise _too_large(name, f"{pixels:,}" if pixels else None, limit) from None
    except Exception:  # noqa: BLE001 - any other failure means "unknown", decoding decides
        return None


def _band_rows(width: int) -> int:
    """Rows in a band of about :data:`BAND_PIXELS` pixels."""
    return max(1, BAND_PIXELS // max(width, 1))


def _composite_on_white(px: np.ndarray, out: np.ndarray, order: tuple[int, int, int]) -> None:
    """Write ``px`` (uint8, alpha in channel 3) composited on white into ``out`` (uint8
    BGR), taking colour channels ``order`` of ``px``.

    Integers only: ``(c * a + 255 * (255 - a) + 127) // 255`` is ``round(c * a / 255 +
    255 - a)`` exactly (the fraction is never one half, 255 being odd) and stays under
    65,536, so uint16 temporaries suffice.
    """
    a = px[:, :, 3].astype(np.uint16)
    white = (255 - a) * 255 + 127
    for k, c in enumerate(order):
        out[:, :, k] = (px[:, :, c] * a + white) // 255


def _band_uint8(band: np.ndarray, float_scale: float) -> np.ndarray:
    """One band of any depth as uint8: 16-bit / 257 rounded (exactly, in integers),
    float times ``float_scale`` and clipped, other integers clipped."""
    if band.dtype == np.uint8:
        return band
    if band.dtype == np.uint16:
        return ((band.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if band.dtype.kind == "f":
        return np.clip(np.nan_to_num(band) * float_scale, 0, 255).astype(np.uint8)
    return np.clip(band, 0, 255).astype(np.uint8)


def to_bgr_uint8(image: np.ndarray) -> np.ndarray:
    """Convert a decoded array (gray, BGRA, 16-bit, float) to BGR uint8.

    Transparent pixels of BGRA images are composited on white, the usual look of
    such images in a viewer. 16-bit values are divided by 257 and rounded; float
    images whose largest value is at most 1 are scaled by 255. The work is done in
    bands of rows, so that memory beyond the (H, W, 3) result stays at a few MB.
    """
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (3, 4))):
        raise ImageError(f"unsupported image shape {np.asarray(image).shape}")
    if img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3:
        return np.ascontiguousarray(img)
    if img.dtype == np.uint8 and img.ndim == 2:
        return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_GRAY2BGR)
    scale = 1.0
    if img.dtype.kind == "f" and img.size and float(np.nanmax(img)) <= 1.0:
        scale = 255.0
    h, w = img.shape[:2]
    out = np.empty((h, w, 3), np.uint8)
    step = _band_rows(w)
    for y0 in range(0, h, step):
        band = _band_uint8(img[y0:y0 + step], scale)
        rows = out[y0:y0 + step]
        if band.ndim == 2:
            rows[:] = band[:, :, None]
        elif band.shape[2] == 4:
            _composite_on_white(band, rows, (0, 1, 2))
        else:
            rows[:] = band
    return out


def _cv2_decode(data: bytes, flags: int, name: str) -> np.ndarray | None:
    """``cv2.imdecode``, None when OpenCV cannot read the data; its pixel-limit
    assertion (``CV_IO_MAX_IMAGE_PIXELS``, 2**30 by default) becomes ImageTooLarge."""
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error as exc:
        if "MAX_IMAGE" in str(exc) or "validateInputImageSize" in str(exc):
            raise ImageTooLarge(f"{name}: too many pixels for the decoder "
                                "(over OpenCV's limit)") from None
        return None
    if img is None or img.size == 0:
        return None
    return img


def _decode_with_pillow(data: bytes, name: str) -> np.ndarray | None:
    """BGR uint8 through Pillow, in bands of rows; transparent pixels on white.

    Pillow keeps the whole image at 8 bits (16-bit RGB(A) PNGs are opened as 8-bit,
    their high byte) and 1 to 4 bytes a pixel; each band is converted to RGB(A) and
    written into the result, so the cost is Pillow's image plus the BGR result.
    Also the fallback for formats OpenCV lacks. None when Pillow cannot decode it.
    """
    Image = _pil()
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in _DEEP_MODES:  # one deep channel, scaled by to_bgr_uint8 as before
                deep = np.asarray(im)
                return to_bgr_uint8(deep.astype(np.uint16) if im.mode in ("I;16", "I;16B", "I")
                                    else deep)
            w, h = im.size
            alpha = im.mode in _ALPHA_MODES or "transparency" in im.info
            out = np.empty((h, w, 3), np.uint8)
            step = _band_rows(w)
            for y0 in range(0, h, step):
                band = im.crop((0, y0, w, min(y0 + step, h)))
                rows = out[y0:y0 + step]
                if alpha:
                    _composite_on_white(np.asarray(band.convert("RGBA")), rows, (2, 1, 0))
                else:
                    rows[:] = np.asarray(band.convert("RGB"))[:, :, ::-1]
            return out
    except ImageTooLarge:
        raise
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"{name}: too many pixels for the decoder "
                            "(over Pillow's limit)") from None
    except Exception:  # noqa: BLE001 - truncated, corrupt or unsupported: the caller says so
        return None


def _decode(data: bytes, header: ImageHeader | None, name: str) -> np.ndarray | None:
    """BGR uint8 pixels by the cheapest decoder for what the header says, or None."""
    if header is not None and header.transparent:
        return _decode_with_pillow(data, name)
    if header is not None and header.mode not in _DEEP_MODES:
        # 8-bit straight from the decoder: 16-bit colour is reduced to its high byte
        # by libpng (within 1 of / 257), gray and palettes expanded to BGR.
        img = _cv2_decode(data, _READ_COLOR, name)
        return img if img is not None else _decode_with_pillow(data, name)
    # A deep single channel (16-bit gray, 32-bit, float) or a header Pillow cannot read:
    # decoded as it is and converted in bands.
    img = _cv2_decode(data, cv2.IMREAD_UNCHANGED, name)
    if img is None:
        return _decode_with_pillow(data, name)
    return to_bgr_uint8(img)


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "image",
                 min_side: int = 1) -> np.ndarray:
    """Decode image bytes by content into a BGR uint8 array.

    Transparent pixels are composited on white; 16-bit images become 8-bit (gray:
    / 257 rounded; colour: the decoder's high byte, within 1 of that); EXIF
    orientation is ignored. Memory: the result (3 bytes a pixel) plus one copy of
    the pixels as the decoder holds them (3 bytes, or 4 for RGBA; see the module).

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
        ImageTooLarge: over ``max_pixels``, or over the decoders' own limits.
        ImageError: empty, undecodable, truncated, zero-size or too-small images.
    """
    if not data:
        raise ImageError(f"{name}: empty file")
    header = probe_image(data, name=name, max_pixels=max_pixels)
    if header is not None and header.pixels > max_pixels:
        raise _too_large(name, f"{header.width}x{header.height}", max_pixels)
    img = _decode(data, header, name)
    if img is None:
        raise ImageError(f"{name}: not a readable image (unknown format or corrupt data)")
    if img.ndim < 2 or img.shape[0] == 0 or img.shape[1] == 0:
        raise ImageError(f"{name}: image has no pixels")
    if img.shape[0] * img.shape[1] > max_pixels:
        raise _too_large(name, f"{img.shape[1]}x{img.shape[0]}", max_pixels)
    if min(img.shape[:2]) < min_side:
        raise ImageError(f"{name}: {img.shape[1]}x{img.shape[0]} pixels is too small to hold "
                         f"a face (at least {min_side}x{min_side})")
    return img


def read_image(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS,
               min_side: int = 1) -> np.ndarray:
    """Read an image file by content into a BGR uint8 array.

    Raises:
        ImageTooLarge: over ``max_pixels`` or the decoders' limits (see :func:`decode_image`).
        ImageError: missing, unreadable, corrupt, empty or too-small (``min_side``) files.
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
