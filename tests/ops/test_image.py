import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from tests.big_images import bomb_png, rgba16_png

from maskwatch.ops.image import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    ImageTooLarge,
    _cv2_decode,
    decode_image,
    read_image,
    to_bgr_uint8,
)


def _encode(pil: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    pil.save(buf, format=fmt)
    return buf.getvalue()


RGB = np.zeros((20, 30, 3), np.uint8)
RGB[:, :, 0] = 200  # red in RGB


@pytest.mark.parametrize(
    "mode, fmt",
    [("RGB", "JPEG"), ("RGB", "PNG"), ("RGB", "WEBP"), ("RGBA", "PNG"), ("P", "PNG"), ("L", "PNG"),
     ("RGB", "BMP"), ("P", "GIF")],
)
def test_decode_by_content(mode, fmt):
    pil = Image.fromarray(RGB).convert(mode)
    img = decode_image(_encode(pil, fmt), name="x.jpg")
    assert img.shape == (20, 30, 3) and img.dtype == np.uint8
    if mode in ("RGB", "RGBA", "P"):
        # red in RGB is the last channel in BGR
        assert img[10, 10, 2] > 150 and img[10, 10, 0] < 60


def test_sixteen_bit_and_rgba_transparency():
    img16 = np.full((8, 8), 65535, np.uint16)
    ok, data = cv2.imencode(".png", img16)
    out = decode_image(data.tobytes())
    assert out.dtype == np.uint8 and out.max() == 255
    rgba = np.zeros((4, 4, 4), np.uint8)  # fully transparent -> white
    assert to_bgr_uint8(rgba).min() == 255


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"not an image at all", "not a readable image"),
        (_encode(Image.fromarray(RGB), "JPEG")[:40], "not a readable image"),
    ],
)
def test_bad_bytes(data, message):
    with pytest.raises(ImageError, match=message):
        decode_image(data)


def test_pixel_limit_checked_before_decoding():
    data = _encode(Image.new("RGB", (400, 300)), "PNG")
    with pytest.raises(ImageError, match="over the limit"):
        decode_image(data, max_pixels=100_000)
    assert decode_image(data, max_pixels=120_000).shape == (300, 400, 3)


def test_read_image_errors(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="not a file"):
        read_image(tmp_path)
    (tmp_path / "one.png").write_bytes(_encode(Image.new("RGB", (1, 1)), "PNG"))
    assert read_image(tmp_path / "one.png").shape == (1, 1, 3)


# -- memory-bounded decoding and pixel limits (issue 15) --------------------------------


def _old_to_bgr_uint8(image: np.ndarray) -> np.ndarray:
    """The conversion before issue 15 (through float copies), the reference for values."""
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
    return np.ascontiguousarray(img)


def _old_decode(data: bytes) -> np.ndarray:
    return _old_to_bgr_uint8(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED))


_RNG = np.random.default_rng(15)
_C, _A = np.meshgrid(np.arange(256), np.arange(256))
ARRAYS = {
    "uint16 gray": _RNG.integers(0, 65536, (64, 80), dtype=np.uint16),
    "uint16 BGR": _RNG.integers(0, 65536, (64, 80, 3), dtype=np.uint16),
    "uint16 BGRA": _RNG.integers(0, 65536, (64, 80, 4), dtype=np.uint16),
    "uint8 BGRA, every colour x alpha": np.dstack([_C, 255 - _C, _C // 2, _A]).astype(np.uint8),
    "float 0-1": _RNG.random((64, 80, 3), dtype=np.float32),
    "float 0-300 with NaN": np.where(_RNG.random((64, 80)) < 0.1, np.nan,
                                     _RNG.random((64, 80)) * 300).astype(np.float32),
    "int32": _RNG.integers(-10, 300, (64, 80, 3)).astype(np.int32),
    "uint8 one channel": _RNG.integers(0, 256, (64, 80, 1)).astype(np.uint8),
}


@pytest.mark.parametrize("name", list(ARRAYS))
def test_to_bgr_uint8_gives_the_float_conversions_values(name, monkeypatch):
    # Integer arithmetic in bands of rows: the same values as the float conversion,
    # exactly (16-bit / 257 and alpha on white never fall on a half). Small bands, so
    # that several bands and a partial last one are converted.
    monkeypatch.setattr("maskwatch.ops.image.BAND_PIXELS", 80 * 7)
    out = to_bgr_uint8(ARRAYS[name])
    assert out.dtype == np.uint8 and out.shape == ARRAYS[name].shape[:2] + (3,)
    assert np.array_equal(out, _old_to_bgr_uint8(ARRAYS[name]))


def _png(arr: np.ndarray) -> bytes:
    return cv2.imencode(".png", arr)[1].tobytes()


def _pil_png(im: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


GRAY8 = _RNG.integers(0, 256, (64, 80), dtype=np.uint8)
FILES = {  # name: (bytes, largest difference allowed from the old decoding)
    # 16-bit gray is decoded at 16 bits and scaled as before: the same values.
    "16-bit gray PNG": (_png(ARRAYS["uint16 gray"]), 0),
    # 16-bit colour comes from the decoder at 8 bits (its high byte, not / 257 rounded).
    "16-bit BGR PNG": (_png(ARRAYS["uint16 BGR"]), 1),
    "16-bit BGRA PNG, opaque": (_png(np.dstack([ARRAYS["uint16 BGR"],
                                                np.full((64, 80), 65535, np.uint16)])), 1),
    # ... and composited on white from 8-bit alpha: one level more where a colour and its
    # alpha are both a level off in opposite directions.
    "16-bit BGRA PNG": (_png(ARRAYS["uint16 BGRA"]), 2),
    "8-bit BGRA PNG": (_png(ARRAYS["uint8 BGRA, every colour x alpha"]), 0),
    "gray + alpha PNG": (_pil_png(Image.fromarray(np.dstack([GRAY8, GRAY8[::-1]]), "LA")), 0),
    "palette PNG with a transparent entry": (_pil_png(Image.fromarray(GRAY8).convert("P"),
                                                      transparency=3), 0),
    "GIF with a transparent entry": (_pil_png(Image.fromarray(GRAY8).convert("P"), "GIF",
                                              transparency=3), 0),
}


@pytest.mark.parametrize("name", list(FILES))
def test_decoding_16_bit_and_alpha_files_keeps_the_old_values(name, monkeypatch):
    monkeypatch.setattr("maskwatch.ops.image.BAND_PIXELS", 80 * 7)
    data, allowed = FILES[name]
    old, new = _old_decode(data), decode_image(data)
    assert new.dtype == np.uint8 and new.shape == old.shape and new.shape[2] == 3
    assert int(np.abs(new.astype(int) - old).max()) <= allowed


def test_transparent_pixels_of_every_kind_become_white():
    clear = np.zeros((16, 16, 4), np.uint16)
    assert decode_image(_png(clear)).min() == 255
    la = Image.fromarray(np.zeros((16, 16, 2), np.uint8), "LA")
    assert decode_image(_pil_png(la)).min() == 255


def _peak_growth_mb(fn) -> tuple[object, float]:
    """(fn(), growth of this process's peak resident memory during fn, MB)."""
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("needs Linux /proc")

    def kb(field: str) -> int:
        line = next(x for x in status.read_text().splitlines() if x.startswith(field))
        return int(line.split()[1])

    try:
        Path("/proc/self/clear_refs").write_text("5")  # peak (VmHWM) := current RSS
    except OSError:
        pytest.skip("cannot reset the peak RSS (/proc/self/clear_refs)")
    base = kb("VmRSS:")
    out = fn()
    return out, (kb("VmHWM:") - base) / 1024


def test_a_16_bit_rgba_png_decodes_in_about_its_8_bit_size():
    # 3000x3000 16-bit RGBA: 69 MB at 16 bits, 26 MB as BGR uint8. Through float copies
    # it cost about 600 MB; now Pillow's 8-bit RGBA (4 bytes a pixel) and the result
    # (3) at most.
    data = rgba16_png(3000)
    pixels = 3000 * 3000
    img, growth = _peak_growth_mb(lambda: decode_image(data))
    assert img.shape == (3000, 3000, 3)
    assert growth < (7 * pixels + 16 * 2**20) / 2**20, f"{growth:.0f} MB"
    # blue falls and red rises across, green rises down, alpha falls from opaque on
    # the left to about 40% on the right (composited on white there)
    # (16-bit colour: the decoder's high byte)
    assert tuple(img[0, 0]) == (255, 0, 0) and tuple(img[-1, 0]) == (255, (2999 * 21) >> 8, 0)
    alpha = (65535 - 40000) >> 8
    assert tuple(img[0, -1]) == (255 - alpha,) * 2 + (255,)


@pytest.mark.parametrize("size, max_pixels, limit", [
    ((20000, 20000), DEFAULT_MAX_PIXELS, "40,000,000"),   # over Pillow's bomb limit, ours named
    ((20000, 20000), 10**12, "178,956,970"),               # over Pillow's limit, ours above it
    ((40000, 40000), DEFAULT_MAX_PIXELS, "40,000,000"),   # over OpenCV's limit too (2**30)
    ((9000, 9000), DEFAULT_MAX_PIXELS, "40,000,000"),     # over ours only: size from the header
])
def test_a_header_over_the_limit_is_refused_before_decoding(size, max_pixels, limit):
    data = bomb_png(*size)
    (exc, growth) = _peak_growth_mb(lambda: pytest.raises(ImageTooLarge, decode_image, data,
                                                          max_pixels=max_pixels, name="huge.png"))
    message = str(exc.value)
    assert message.startswith("huge.png: ") and f"over the limit of {limit} pixels" in message
    assert f"{size[0] * size[1]:,}" in message or f"{size[0]}x{size[1]}" in message
    assert isinstance(exc.value, ImageError) and "\n" not in message
    assert growth < 50, f"{growth:.0f} MB"  # nothing decoded


def test_opencvs_pixel_assertion_is_too_large():
    # A header Pillow cannot read leaves the decision to OpenCV, whose limit (2**30
    # pixels) raises an assertion: that is "too large" too, not a crash.
    data = bomb_png(40000, 40000)
    broken_for_pillow = data[:12] + b"IHDX" + data[16:]  # the first chunk is not IHDR
    with pytest.raises(ImageError):
        decode_image(broken_for_pillow)
    with pytest.raises(ImageTooLarge, match="too many pixels for the decoder"):
        _cv2_decode(data, cv2.IMREAD_UNCHANGED, "huge.png")
