"""Training-time augmentation of face crops (numpy + OpenCV only).

Crops are BGR uint8 square face crops, cut exactly as at run time (face box plus
margin, resized to S x S). :func:`augment_crop` applies:

1. one random affine transform of the kinds Keras's ``ImageDataGenerator`` makes
   (rotation, width/height shift, shear, zoom, horizontal flip), composed into a
   single ``cv2.warpAffine`` whose border is reflected (``BORDER_REFLECT_101``),
   never filled with black;
2. what live cameras add, each drawn independently: colour (brightness, contrast,
   saturation, hue, white balance), then with their own probabilities low
   resolution (a small, far face scaled down and back up), gaussian or motion blur,
   sensor noise and JPEG artefacts.

Sizes of blur kernels are fractions of the crop side so that the look does not
depend on S; low resolution is in absolute pixels because it simulates small faces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["AugmentConfig", "augment_crop"]

# BGR -> YIQ (rows Y, I, Q; columns B, G, R), for hue rotation and saturation.
_BGR2YIQ = np.array(
    [
        [0.114, 0.587, 0.299],
        [-0.322, -0.274, 0.596],
        [0.312, -0.523, 0.211],
    ],
    dtype=np.float64,
)
_YIQ2BGR = np.linalg.inv(_BGR2YIQ)
_LUMA_BGR = np.array([0.114, 0.587, 0.299], dtype=np.float32)


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths and probabilities of :func:`augment_crop`.

    Symmetric ranges draw uniformly from ``[-x, x]`` (or ``[1 - x, 1 + x]`` for
    factors); ``(lo, hi)`` ranges draw uniformly from ``[lo, hi]``. Setting every
    strength to 0, every probability to 0 and ``hflip`` to False makes
    :func:`augment_crop` return an exact copy (see :meth:`identity`).

    Geometry (always applied, as Keras ``ImageDataGenerator``):
        rotation_deg: rotation, degrees.
        shift: translation, fraction of the crop width/height, per axis.
        shear_deg: horizontal shear angle, degrees.
        zoom: isotropic scale factor in ``[1 - zoom, 1 + zoom]`` (>1 zooms in).
        hflip: mirror left-right with probability 0.5.

    Colour (always applied, random strength):
        brightness: gain factor in ``[1 - b, 1 + b]`` on all channels.
        contrast: factor in ``[1 - c, 1 + c]`` around the mean luminance.
        saturation: chroma factor in ``[1 - s, 1 + s]`` (0 gives gray).
        hue_deg: hue rotation, degrees (in YIQ chroma space).
        white_balance: independent blue and red gains in ``[1 - w, 1 + w]``.

    Degradations (each with its probability):
        blur_p: probability of a blur; ``motion_blur_share`` of them are motion blur.
        blur_sigma: gaussian sigma, fraction of the crop side.
        motion_blur_length: motion blur streak length, fraction of the crop side
            (at least 2 pixels), at a uniformly random angle.
        jpeg_p / jpeg_quality: re-encode as JPEG at an integer quality in the range.
        lowres_p / lowres_size: downscale to a side in pixels (int range) and back.
        noise_p / noise_sigma: additive gaussian noise, standard deviation in 0-255
            pixel units, per pixel and channel.
        lowlight_p / lowlight_gain: darken by a gain in the range (dim rooms,
            back-lit faces: the live false "mask" calls were on such faces, mean luma
            9-13 of 255), with a colour cast, grey or sensor noise now and then.
    """

    rotation_deg: float = 20.0
    shift: float = 0.2
    shear_deg: float = 20.0
    zoom: float = 0.15
    hflip: bool = True

    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue_deg: float = 8.0
    white_balance: float = 0.1

    blur_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.003, 0.012)
    motion_blur_share: float = 0.5
    motion_blur_length: tuple[float, float] = (0.02, 0.07)
    jpeg_p: float = 0.3
    jpeg_quality: tuple[int, int] = (25, 90)
    lowres_p: float = 0.25
    lowres_size: tuple[int, int] = (12, 40)
    noise_p: float = 0.15
    noise_sigma: tuple[float, float] = (2.0, 10.0)
    lowlight_p: float = 0.2
    lowlight_gain: tuple[float, float] = (0.07, 0.5)

    def __post_init__(self) -> None:
        for name in (
            "rotation_deg",
            "shift",
            "shear_deg",
            "brightness",
            "contrast",
            "saturation",
            "hue_deg",
            "white_balance",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"AugmentConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.zoom < 1:
            raise ValueError(f"AugmentConfig.zoom must be in [0, 1), got {self.zoom}")
        for name in ("blur_p", "motion_blur_share", "jpeg_p", "lowres_p", "noise_p", "lowlight_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(
                    f"AugmentConfig.{name} must be in [0, 1], got {getattr(self, name)}"
                )
        for name in (
            "blur_sigma",
            "motion_blur_length",
            "jpeg_quality",
            "lowres_size",
            "noise_sigma",
            "lowlight_gain",
        ):
            lo, hi = getattr(self, name)
            if lo > hi or lo < 0:
                raise ValueError(
                    f"AugmentConfig.{name} must be (lo, hi) with 0 <= lo <= hi, got {(lo, hi)}"
                )
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ValueError(
                f"AugmentConfig.jpeg_quality must lie in [1, 100], got {self.jpeg_quality}"
            )
        if self.lowres_size[0] < 1:
            raise ValueError(
                f"AugmentConfig.lowres_size must be >= 1 pixel, got {self.lowres_size}"
            )

    @classmethod
    def identity(cls) -> AugmentConfig:
        """A zero-strength config: :func:`augment_crop` then returns an exact copy."""
        return cls(
            rotation_deg=0.0,
            shift=0.0,
            shear_deg=0.0,
            zoom=0.0,
            hflip=False,
            brightness=0.0,
            contrast=0.0,
            saturation=0.0,
            hue_deg=0.0,
            white_balance=0.0,
            blur_p=0.0,
            jpeg_p=0.0,
            lowres_p=0.0,
            noise_p=0.0,
            lowlight_p=0.0,
        )


def _symmetric(rng: np.random.Generator, x: float) -> float:
    """Uniform draw in [-x, x] (exactly 0.0 when x is 0)."""
    return float(rng.uniform(-x, x)) if x > 0 else 0.0


def _affine_matrix(
    rng: np.random.Generator, width: int, height: int, cfg: AugmentConfig
) -> np.ndarray:
    """Random 2x3 affine matrix (destination <- source) about the crop centre."""
    theta = math.radians(_symmetric(rng, cfg.rotation_deg))
    shear = math.radians(_symmetric(rng, cfg.shear_deg))
    scale = 1.0 + _symmetric(rng, cfg.zoom)
    tx = _symmetric(rng, cfg.shift) * width
    ty = _symmetric(rng, cfg.shift) * height
    flip = -1.0 if (cfg.hflip and rng.random() < 0.5) else 1.0
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    cos, sin = math.cos(theta), math.sin(theta)
    rot = np.array([[cos, -sin], [sin, cos]])
    shr = np.array([[1.0, math.tan(shear)], [0.0, 1.0]])
    lin = scale * rot @ shr @ np.diag([flip, 1.0])
    centre = np.array([cx, cy])
    offset = centre + np.array([tx, ty]) - lin @ centre
    return np.hstack([lin, offset[:, None]])


def _colour(img: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Brightness, white balance, saturation, hue (one 3x3 matrix), then contrast."""
    gain = 1.0 + _symmetric(rng, cfg.brightness)
    wb_b = 1.0 + _symmetric(rng, cfg.white_balance)
    wb_r = 1.0 + _symmetric(rng, cfg.white_balance)
    sat = 1.0 + _symmetric(rng, cfg.saturation)
    hue = math.radians(_symmetric(rng, cfg.hue_deg))
    contrast = 1.0 + _symmetric(rng, cfg.contrast)
    if (
        gain == 1.0
        and wb_b == 1.0
        and wb_r == 1.0
        and sat == 1.0
        and hue == 0.0
        and contrast == 1.0
    ):
        return img
    chroma = sat * np.array([[math.cos(hue), -math.sin(hue)], [math.sin(hue), math.cos(hue)]])
    yiq = np.eye(3)
    yiq[1:, 1:] = chroma
    matrix = np.diag([wb_b, 1.0, wb_r]) * gain @ _YIQ2BGR @ yiq @ _BGR2YIQ
    out = cv2.transform(img, matrix.astype(np.float32))
    if contrast != 1.0:
        mean = float(out.reshape(-1, 3).mean(axis=0) @ _LUMA_BGR)
        out = (out - mean) * np.float32(contrast) + np.float32(mean)
    return out


def _blur(img: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Gaussian or motion blur, sizes relative to the crop side."""
    side = min(img.shape[:2])
    if rng.random() < cfg.motion_blur_share:
        length = max(2.0, float(rng.uniform(*cfg.motion_blur_length)) * side)
        angle = float(rng.uniform(0.0, math.pi))
        k = int(math.ceil(length)) | 1
        kernel = np.zeros((k, k), np.float32)
        c = (k - 1) / 2.0
        dx, dy = math.cos(angle) * (length - 1) / 2.0, math.sin(angle) * (length - 1) / 2.0
        shift = 4  # sub-pixel precision bits of cv2.line
        p1 = (round((c - dx) * 16), round((c - dy) * 16))
        p2 = (round((c + dx) * 16), round((c + dy) * 16))
        cv2.line(kernel, p1, p2, 1.0, thickness=1, lineType=cv2.LINE_AA, shift=shift)
        total = float(kernel.sum())
        if total <= 0:
            return img
        return cv2.filter2D(img, -1, kernel / total, borderType=cv2.BORDER_REFLECT_101)
    sigma = float(rng.uniform(*cfg.blur_sigma)) * side
    if sigma <= 0:
        return img
    return cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT_101)


def _lowres(img: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Scale down so the longer side is a random size in pixels, then back up."""
    h, w = img.shape[:2]
    target = int(rng.integers(cfg.lowres_size[0], cfg.lowres_size[1] + 1))
    up = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_NEAREST)[int(rng.integers(0, 3))]
    if target >= max(h, w):
        return img
    scale = target / max(h, w)
    small = cv2.resize(
        img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )
    return cv2.resize(small, (w, h), interpolation=up)


def _jpeg(img_u8: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Re-encode as JPEG at a random quality (uint8 in, uint8 out)."""
    quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    ok, buf = cv2.imencode(".jpg", img_u8, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - encoding a valid uint8 image does not fail
        return img_u8
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return img_u8 if decoded is None else decoded


def augment_crop(
    crop: np.ndarray,
    rng: np.random.Generator,
    config: AugmentConfig = AugmentConfig(),  # noqa: B008 - frozen, immutable default
) -> np.ndarray:
    """Randomly augment one face crop.

    Order: affine warp (rotation, shift, shear, zoom, flip; bilinear,
    ``BORDER_REFLECT_101``), colour (brightness, white balance, saturation, hue,
    contrast), then, each with its probability, low resolution, blur, noise and
    JPEG re-encoding (last, as in a camera stream). The random draws depend only on
    ``rng`` and the config, so the same seed gives the same output.

    Args:
        crop: (S, S, 3) BGR uint8 face crop (non-square (H, W, 3) crops work too).
            Not modified.
        rng: random generator, e.g. ``np.random.default_rng(seed)``.
        config: strengths and probabilities; :meth:`AugmentConfig.identity` gives
            an exact copy.

    Returns:
        A new (S, S, 3) BGR uint8 array.
    """
    img = np.asarray(crop)
    if (
        img.dtype != np.uint8
        or img.ndim != 3
        or img.shape[2] != 3
        or img.shape[0] < 1
        or img.shape[1] < 1
    ):
        raise ValueError(
            f"augment_crop expects an (H, W, 3) uint8 BGR crop, got {img.shape} {img.dtype}"
        )
    h, w = img.shape[:2]
    out = img.copy()

    matrix = _affine_matrix(rng, w, h, config)
    if not np.array_equal(matrix, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])):
        out = cv2.warpAffine(
            out, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )

    work = out.astype(np.float32)
    changed = False
    coloured = _colour(work, rng, config)
    if coloured is not work:
        work, changed = coloured, True
    if config.lowlight_p > 0 and rng.random() < config.lowlight_p:
        # Dim rooms, back-lit faces and night cameras: a strong gain cut, often with the
        # colour cast of a cheap sensor's white balance, grey (infrared) pictures, and
        # the sensor noise a camera adds when it amplifies a dark picture.
        work = work * float(rng.uniform(*config.lowlight_gain))
        if rng.random() < 0.4:
            work = work * rng.uniform(0.75, 1.25, 3).astype(np.float32)
        if rng.random() < 0.15:
            work = np.repeat(work.mean(2, keepdims=True), 3, axis=2)
        if rng.random() < 0.5:
            work = work + rng.normal(0.0, rng.uniform(0.8, 3.0), work.shape).astype(np.float32)
        changed = True
    if config.lowres_p > 0 and rng.random() < config.lowres_p:
        work, changed = _lowres(work, rng, config), True
    if config.blur_p > 0 and rng.random() < config.blur_p:
        work, changed = _blur(work, rng, config), True
    if config.noise_p > 0 and rng.random() < config.noise_p:
        sigma = float(rng.uniform(*config.noise_sigma))
        work = work + rng.normal(0.0, sigma, size=work.shape).astype(np.float32)
        changed = True
    if changed:
        out = np.clip(np.rint(work), 0, 255).astype(np.uint8)
    if config.jpeg_p > 0 and rng.random() < config.jpeg_p:
        out = _jpeg(out, rng, config)
    return out
