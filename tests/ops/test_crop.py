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


def test_lower_face_colours_reads_the_lower_half_of_each_box():
    from maskwatch.ops.crop import colour_change, lower_face_colours

    img = np.full((100, 200, 3), (80, 120, 200), np.uint8)  # skin-like, BGR
    img[50:100, 0:100] = (200, 120, 40)  # the lower half of the first face is blue
    boxes = np.array([[0, 0, 100, 100], [100, 0, 200, 100], [300, 300, 400, 400]], np.float32)
    looks = lower_face_colours(img, boxes)
    assert looks.shape == (3, 3) and looks.dtype == np.float32
    assert np.isnan(looks[2]).all()  # outside the image
    assert colour_change(looks[0], looks[1]) > 40  # skin against a blue mask
    assert colour_change(looks[1], looks[1]) == 0.0
    assert colour_change(looks[1], looks[2]) == 0.0  # no pixels: no change
    # Light alone counts half: the same skin 20 levels brighter moves L by about 20.
    brighter = lower_face_colours(np.clip(img.astype(int) + 20, 0, 255).astype(np.uint8),
                                  boxes[1:2])[0]
    assert colour_change(looks[1], brighter) < 15


def test_lower_face_colours_tell_a_mask_on_a_real_face(datasets):
    from maskwatch.models.detector import YuNetDetector
    from maskwatch.ops.crop import colour_change, lower_face_colours
    from maskwatch.ops.image import read_image
    from maskwatch.ops.synthmask import render_mask

    image = read_image(datasets / "identity-examples" / "examples" / "alex-lacamoire.png")
    faces = YuNetDetector().detect(image)
    box, lm = faces.boxes[0], faces.landmarks[0]
    masked = render_mask(image, lm, box, position="proper", rng=np.random.default_rng(0))
    plain_look = lower_face_colours(image, box[None])[0]
    shifted = lower_face_colours(image, (box + np.float32([3, 2, 3, 2]))[None])[0]
    assert colour_change(plain_look, shifted) < 5  # the box moved a little
    # a mask went on
    assert colour_change(plain_look, lower_face_colours(masked, box[None])[0]) > 15


def test_brighten_dark_lifts_only_the_dark_crops():
    from maskwatch.ops.crop import brighten_dark

    rng = np.random.default_rng(0)
    bright = rng.integers(60, 200, (112, 112, 3)).astype(np.uint8)
    dark = (bright * 0.08).astype(np.uint8)  # mean luma about 10, as the clip's dark faces
    out = brighten_dark(np.stack([bright, dark]), 50, 100)
    assert np.array_equal(out[0], bright)
    assert 70 < out[1].mean() < 130
    # the order of grey levels is kept: brightening does not invent or swap detail
    flat_in, flat_out = dark.reshape(-1).astype(int), out[1].reshape(-1).astype(int)
    order = np.argsort(flat_in, kind="stable")
    assert np.all(np.diff(flat_out[order]) >= 0)
    none_dark = np.stack([bright])
    assert brighten_dark(none_dark, 50, 100) is none_dark


def test_crops_to_tensor_brightens_only_when_asked():
    from maskwatch.ops.crop import crops_to_tensor

    dark = np.full((1, 16, 16, 3), 10, np.uint8)
    plain = crops_to_tensor(dark)
    lifted = crops_to_tensor(dark, low_light=(50, 100))
    assert lifted.mean() > plain.mean() + 1.0
    assert np.array_equal(crops_to_tensor(np.full((1, 16, 16, 3), 120, np.uint8)),
                          crops_to_tensor(np.full((1, 16, 16, 3), 120, np.uint8),
                                          low_light=(50, 100)))
