"""Tests for maskwatch.train.augment."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from maskwatch.train.augment import AugmentConfig, augment_crop

IDENTITY = AugmentConfig.identity()


def _crop(size: int = 96, seed: int = 0, width: int | None = None) -> np.ndarray:
    """A textured synthetic crop: gradient, shapes and a little noise."""
    rng = np.random.default_rng(seed)
    w = width or size
    yy, xx = np.mgrid[0:size, 0:w].astype(np.float32)
    img = np.stack([60 + 120 * xx / w, 60 + 120 * yy / size, 200 - 100 * xx / w], axis=-1)
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    cv2.circle(img, (w // 2, size // 2), size // 4, (30, 160, 220), -1)
    cv2.rectangle(img, (w // 4, size // 5), (w // 2, size // 3), (240, 240, 240), -1)
    return img


def _only(**kwargs: object) -> AugmentConfig:
    """Identity config with a few fields changed."""
    return dataclasses.replace(IDENTITY, **kwargs)


# One config per operation, strong enough to always change the crop.
SINGLE_OPS = {
    "rotation": _only(rotation_deg=20.0),
    "shift": _only(shift=0.2),
    "shear": _only(shear_deg=20.0),
    "zoom": _only(zoom=0.15),
    "brightness": _only(brightness=0.3),
    "contrast": _only(contrast=0.3),
    "saturation": _only(saturation=0.3),
    "hue": _only(hue_deg=8.0),
    "white_balance": _only(white_balance=0.1),
    "gaussian_blur": _only(blur_p=1.0, motion_blur_share=0.0),
    "motion_blur": _only(blur_p=1.0, motion_blur_share=1.0),
    "jpeg": _only(jpeg_p=1.0),
    "lowres": _only(lowres_p=1.0),
    "noise": _only(noise_p=1.0),
}

ALL_ON = dataclasses.replace(AugmentConfig(), blur_p=1.0, jpeg_p=1.0, lowres_p=1.0, noise_p=1.0)


@pytest.mark.parametrize(
    "config", [AugmentConfig(), ALL_ON, IDENTITY], ids=["default", "all_on", "identity"]
)
@pytest.mark.parametrize(("size", "width"), [(64, None), (112, None), (128, None), (80, 100)])
def test_shape_dtype_and_input_unchanged(
    config: AugmentConfig, size: int, width: int | None
) -> None:
    crop = _crop(size, width=width)
    before = crop.copy()
    rng = np.random.default_rng(0)
    for _ in range(5):
        out = augment_crop(crop, rng, config)
        assert out.shape == crop.shape
        assert out.dtype == np.uint8
        assert out is not crop and not np.shares_memory(out, crop)
    np.testing.assert_array_equal(crop, before)


def test_deterministic_per_seed() -> None:
    crop = _crop()
    a = [augment_crop(crop, np.random.default_rng(42), ALL_ON) for _ in range(2)]
    np.testing.assert_array_equal(a[0], a[1])
    seq1 = [augment_crop(crop, rng) for rng in [np.random.default_rng(7)] for _ in range(4)]
    seq2 = [augment_crop(crop, rng) for rng in [np.random.default_rng(7)] for _ in range(4)]
    for x, y in zip(seq1, seq2, strict=True):
        np.testing.assert_array_equal(x, y)
    b = augment_crop(crop, np.random.default_rng(43), ALL_ON)
    assert not np.array_equal(a[0], b)


@pytest.mark.parametrize("seed", range(5))
def test_zero_strength_config_returns_input_exactly(seed: int) -> None:
    crop = _crop(seed=seed)
    out = augment_crop(crop, np.random.default_rng(seed), IDENTITY)
    np.testing.assert_array_equal(out, crop)


def test_identity_helper_is_all_zero() -> None:
    cfg = AugmentConfig.identity()
    assert not cfg.hflip
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and f.name != "motion_blur_share":
            assert value == 0.0, f.name


@pytest.mark.parametrize("name", sorted(SINGLE_OPS))
def test_each_operation_changes_the_crop(name: str) -> None:
    crop = _crop(96)
    rng = np.random.default_rng(1)
    outs = [augment_crop(crop, rng, SINGLE_OPS[name]) for _ in range(4)]
    for out in outs:
        assert out.shape == crop.shape and out.dtype == np.uint8
    assert any(np.abs(out.astype(int) - crop).mean() > 0.5 for out in outs), name


def test_hflip_only_gives_input_or_its_mirror() -> None:
    crop = _crop(64, width=80)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(20):
        out = augment_crop(crop, rng, _only(hflip=True))
        if np.array_equal(out, crop):
            seen.add("same")
        else:
            np.testing.assert_array_equal(out, crop[:, ::-1])
            seen.add("mirror")
    assert seen == {"same", "mirror"}


@pytest.mark.parametrize("name", ["rotation", "shift", "shear", "zoom"])
def test_geometry_reflects_border_instead_of_black(name: str) -> None:
    # A uniformly coloured crop stays uniform under any warp with a reflected border;
    # a constant (black) border would leave dark corners.
    crop = np.full((64, 64, 3), (90, 180, 250), np.uint8)
    rng = np.random.default_rng(0)
    for _ in range(10):
        out = augment_crop(crop, rng, SINGLE_OPS[name])
        np.testing.assert_array_equal(out, crop)


def test_full_geometry_keeps_corners_bright() -> None:
    crop = np.full((64, 64, 3), 255, np.uint8)
    cfg = _only(rotation_deg=20.0, shift=0.2, shear_deg=20.0, zoom=0.15, hflip=True)
    rng = np.random.default_rng(3)
    for _ in range(10):
        assert augment_crop(crop, rng, cfg).min() == 255


def test_geometry_moves_content_as_configured() -> None:
    # A bright dot moves by at most the configured shift (plus rotation/zoom about the centre).
    crop = np.zeros((100, 100, 3), np.uint8)
    cv2.circle(crop, (50, 50), 4, (255, 255, 255), -1)
    rng = np.random.default_rng(0)
    for _ in range(10):
        out = augment_crop(crop, rng, _only(shift=0.1))
        ys, xs = np.nonzero(out[:, :, 0] > 128)
        assert abs(xs.mean() - 50) <= 10.5 and abs(ys.mean() - 50) <= 10.5


def test_lowres_removes_fine_detail() -> None:
    crop = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    out = augment_crop(crop, np.random.default_rng(0), _only(lowres_p=1.0, lowres_size=(12, 20)))
    sharp_before = cv2.Laplacian(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
    sharp_after = cv2.Laplacian(cv2.cvtColor(out, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
    assert sharp_after < 0.25 * sharp_before


def test_lowres_larger_than_crop_is_a_no_op() -> None:
    crop = _crop(32)
    out = augment_crop(crop, np.random.default_rng(0), _only(lowres_p=1.0, lowres_size=(40, 40)))
    np.testing.assert_array_equal(out, crop)


def test_noise_has_the_configured_strength() -> None:
    crop = np.full((128, 128, 3), 128, np.uint8)
    out = augment_crop(crop, np.random.default_rng(0), _only(noise_p=1.0, noise_sigma=(8.0, 8.0)))
    assert 7.0 < (out.astype(float) - 128).std() < 9.0


def test_jpeg_changes_little_but_something() -> None:
    crop = _crop(96)
    out = augment_crop(crop, np.random.default_rng(0), _only(jpeg_p=1.0, jpeg_quality=(25, 25)))
    diff = np.abs(out.astype(int) - crop).mean()
    assert 0.2 < diff < 15


@pytest.mark.parametrize("name", ["saturation", "hue"])
def test_saturation_and_hue_keep_luminance(name: str) -> None:
    # Mid-tone colours, so that nothing clips: changing chroma must not change brightness.
    crop = np.clip(_crop(64).astype(int) // 2 + 64, 0, 255).astype(np.uint8)
    luma = np.array([0.114, 0.587, 0.299])
    rng = np.random.default_rng(0)
    for _ in range(5):
        out = augment_crop(crop, rng, SINGLE_OPS[name])
        assert np.abs(out @ luma - crop @ luma).max() < 1.5


def test_probabilities_are_respected() -> None:
    crop = _crop(64)
    rng = np.random.default_rng(0)
    cfg = _only(noise_p=0.3)
    changed = sum(not np.array_equal(augment_crop(crop, rng, cfg), crop) for _ in range(200))
    assert 40 <= changed <= 80


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((32, 32), np.uint8),
        np.zeros((32, 32, 4), np.uint8),
        np.zeros((32, 32, 3), np.float32),
        np.zeros((0, 32, 3), np.uint8),
    ],
    ids=["gray", "bgra", "float", "empty"],
)
def test_rejects_bad_crops(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        augment_crop(bad, np.random.default_rng(0))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rotation_deg": -1.0},
        {"zoom": 1.0},
        {"blur_p": 1.5},
        {"jpeg_quality": (90, 25)},
        {"jpeg_quality": (0, 50)},
        {"lowres_size": (0, 10)},
        {"noise_sigma": (-1.0, 2.0)},
    ],
)
def test_config_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        AugmentConfig(**kwargs)


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        AugmentConfig().rotation_deg = 5.0  # type: ignore[misc]
