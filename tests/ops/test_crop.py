import numpy as np
import pytest

from maskwatch.ops.crop import crop_region, crops_to_tensor, face_crop, face_crops


@pytest.mark.parametrize(
    "box, margin, expected",
    [
        ((10, 10, 50, 50), 0.0, (10, 10, 40)),
        ((10, 10, 50, 50), 0.25, (0, 0, 60)),
        ((0, 0, 20, 40), 0.0, (-10, 0, 40)),  # square around the longer side
    ],
)
def test_crop_region(box, margin, expected):
    assert crop_region(np.array(box, np.float32), margin) == expected


def test_face_crop_content_and_borders():
    img = np.zeros((100, 100, 3), np.uint8)
    img[40:60, 40:60] = 255
    crop = face_crop(img, np.array([40, 40, 60, 60]), 20, 0.0)
    assert crop.shape == (20, 20, 3) and crop.min() == 255
    # A box at the corner extends past the image: border pixels are repeated, no black fill.
    img2 = np.full((50, 50, 3), 90, np.uint8)
    crop2 = face_crop(img2, np.array([-10, -10, 20, 20]), 16, 0.2)
    assert crop2.shape == (16, 16, 3) and crop2.min() == 90
    assert face_crops(img, np.zeros((0, 4)), 8, 0.1).shape == (0, 8, 8, 3)


def test_crops_to_tensor_is_rgb_normalised():
    crops = np.zeros((2, 4, 4, 3), np.uint8)
    crops[..., 2] = 255  # red in BGR
    t = crops_to_tensor(crops, mean=(0, 0, 0), std=(255, 255, 255))
    assert t.shape == (2, 3, 4, 4) and t.dtype == np.float32
    assert t[:, 0].min() == 1.0 and t[:, 2].max() == 0.0


def test_appearance_thumbnails_ignore_brightness_and_see_change():
    from maskwatch.ops.crop import appearance_thumbnails

    rng = np.random.default_rng(0)
    image = rng.integers(0, 200, (120, 160, 3), dtype=np.uint8)
    box = np.array([[20, 20, 84, 84]], np.float32)
    a = appearance_thumbnails(image, box)
    assert a.shape == (1, 256) and abs(float(a.mean())) < 1e-4
    brighter = appearance_thumbnails(np.clip(image.astype(np.int16) + 40, 0, 255).astype(np.uint8), box)
    assert np.abs(a - brighter).mean() < 0.05
    covered = image.copy()
    covered[52:84, 20:84] = 255  # the lower half covered, as by a mask
    assert np.abs(a - appearance_thumbnails(covered, box)).mean() > 0.3
    assert not appearance_thumbnails(image, np.array([[500, 500, 600, 600]], np.float32)).any()
