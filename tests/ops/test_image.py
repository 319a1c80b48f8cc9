import io

import cv2
import numpy as np
import pytest
from PIL import Image

from maskwatch.ops.image import ImageError, decode_image, read_image, to_bgr_uint8


def _encode(pil: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    pil.save(buf, format=fmt)
    return buf.getvalue()


RGB = np.zeros((20, 30, 3), np.uint8)
RGB[:, :, 0] = 200  # red in RGB


@pytest.mark.parametrize(
    "mode, fmt",
    [("RGB", "JPEG"), ("RGB", "PNG"), ("RGB", "WEBP"), ("RGBA", "PNG"), ("P", "PNG"), ("L", "PNG"), ("RGB", "BMP"), ("P", "GIF")],
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
