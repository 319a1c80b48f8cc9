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
