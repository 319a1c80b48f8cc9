"""Faces whose mouth is covered by something that is not a mask: hard negatives.

A classifier trained only on masked and bare faces learns "the mouth is hidden" as
"a mask": on the shared clip a background face whose mouth is behind another head
was called ``with_mask`` at 0.98 on every frame, and people holding a hand over the
mouth look masked to it. :func:`render_cover` draws such covers on a face from its
five landmarks, for training (label ``without_mask``) and for a held-out check:

- ``hand``: a hand over the mouth and chin, skin-coloured from the face itself
  (training family: an open hand, fingers up or across; held-out: a fist);
- ``head``: another person's head in front of the lower face, cut from a donor photo
  (the face with its hair, or only the back of the head: the hair);
- ``object``: something held in front of the mouth (training: a cup, a microphone;
  held-out: a phone, a book).

A scarf is not drawn: a scarf over mouth and nose is a face covering under most
mask rules, and our ``with_mask`` class already holds cloth masks of every pattern,
so calling it ``without_mask`` would teach the classifier a contradiction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from maskwatch.ops.synthmask import _scene_gain

COVER_KINDS = ("hand", "head", "object")
COVER_FAMILIES = ("train", "held_out")

#: Object shapes of each family.
_OBJECTS = {"train": ("cup", "microphone"), "held_out": ("phone", "book")}

_SS = 4  # outlines are drawn at 4x and shrunk: anti-aliased edges


class _Frame:
    """The face's axes from its landmarks: ``u`` to the image-right eye, ``d`` down."""

    def __init__(self, landmarks, box) -> None:
        lm = np.asarray(landmarks, np.float64).reshape(5, 2)
        eyes = lm[:2][np.argsort(lm[:2, 0])]
        self.eye_c = eyes.mean(0)
        self.mouth_c = lm[3:5].mean(0)
        self.nose = lm[2]
        u = eyes[1] - eyes[0]
        self.iod = max(float(np.linalg.norm(u)), 2.0)
        self.u = u / self.iod
        self.d = np.array([-self.u[1], self.u[0]])
        if (self.mouth_c - self.eye_c) @ self.d < 0:
            self.d = -self.d
        self.face_h = max(float((self.mouth_c - self.eye_c) @ self.d), 0.6 * self.iod)
        x1, y1, x2, y2 = (float(v) for v in np.asarray(box).reshape(4))
        self.width = max(x2 - x1, self.iod * 1.6)

    def point(self, a: float, b: float, origin: np.ndarray | None = None) -> np.ndarray:
        """``origin + a * iod * u + b * iod * d`` (origin: the mouth's centre)."""
        o = self.mouth_c if origin is None else origin
        return o + a * self.iod * self.u + b * self.iod * self.d


def _to_px(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points) * _SS).astype(np.int32).reshape(-1, 1, 2)


def _capsule(canvas: np.ndarray, p: np.ndarray, q: np.ndarray, radius: float) -> None:
    cv2.line(canvas, tuple(_to_px(p)[0, 0]), tuple(_to_px(q)[0, 0]), 255,
             thickness=max(int(round(2 * radius * _SS)), 1), lineType=cv2.LINE_AA)


def _ellipse(canvas: np.ndarray, c: np.ndarray, axes: tuple[float, float], angle: float,
             value: int = 255) -> None:
    cv2.ellipse(canvas, tuple(_to_px(c)[0, 0]), (max(int(axes[0] * _SS), 1),
                max(int(axes[1] * _SS), 1)), angle, 0, 360, value, -1, cv2.LINE_AA)


def _poly(canvas: np.ndarray, pts: np.ndarray, value: int = 255) -> None:
    cv2.fillPoly(canvas, [_to_px(pts)], value, lineType=cv2.LINE_AA)


def _skin_colour(image: np.ndarray, fr: _Frame, rng: np.random.Generator) -> np.ndarray:
    """Median colour of the cheeks (beside the nose), varied a little: BGR float."""
    h, w = image.shape[:2]
    samples = []
    for side in (-1.0, 1.0):
        c = fr.point(0.55 * side, 0.0, origin=fr.nose)
        r = max(int(0.15 * fr.iod), 1)
        x, y = int(round(c[0])), int(round(c[1]))
        patch = image[max(y - r, 0):min(y + r + 1, h), max(x - r, 0):min(x + r + 1, w)]
        if patch.size:
            samples.append(patch.reshape(-1, 3))
    base = (np.median(np.concatenate(samples), 0) if samples
            else np.array([110.0, 140.0, 190.0]))
    return np.clip(base * rng.uniform(0.8, 1.2) * rng.uniform(0.93, 1.07, 3), 8, 250)


def _hand_layer(shape_hw, fr: _Frame, rng: np.random.Generator, family: str) -> np.ndarray:
    """Supersampled coverage of a hand over the mouth (uint8, ``_SS`` times the image)."""
    canvas = np.zeros((shape_hw[0] * _SS, shape_hw[1] * _SS), np.uint8)
    s = fr.iod * rng.uniform(0.9, 1.25)  # palm width is about one inter-ocular distance
    # The hand's own axes: "up" (towards the fingers) and "across", turned at random.
    if family == "train":
        angle = rng.choice([rng.uniform(-35, 35), rng.uniform(55, 125) * rng.choice([-1, 1])])
    else:
        angle = rng.uniform(-60, 60)
    t = math.radians(float(angle))
    up = -fr.d * math.cos(t) + fr.u * math.sin(t)
    across = np.array([-up[1], up[0]])
    centre = fr.point(rng.uniform(-0.35, 0.35), rng.uniform(0.05, 0.45))
    if family == "train":  # an open hand: palm, four fingers, a thumb
        palm_c = centre - up * 0.25 * s
        _ellipse(canvas, palm_c, (0.55 * s, 0.6 * s), math.degrees(math.atan2(up[1], up[0])))
        spread = rng.uniform(0.0, 0.12)
        for k, length in enumerate((0.85, 1.0, 0.95, 0.75)):
            off = (k - 1.5) * 0.26 * s
            base = palm_c + across * off + up * 0.35 * s
            tip_dir = up + across * (k - 1.5) * spread
            tip_dir /= np.linalg.norm(tip_dir)
            _capsule(canvas, base, base + tip_dir * length * s, 0.115 * s)
        side = rng.choice([-1.0, 1.0])
        th0 = palm_c + across * side * 0.4 * s
        _capsule(canvas, th0, th0 + (across * side * 0.55 + up * 0.45) * s, 0.13 * s)
    else:  # a fist: a rounded block with knuckles and a thumb across the front
        body = np.array([centre + across * a * s + up * b * s
                         for a, b in ((-0.6, -0.5), (0.6, -0.5), (0.65, 0.35), (-0.65, 0.35))])
        _poly(canvas, body)
        for k in range(4):
            _ellipse(canvas, centre + across * (k - 1.5) * 0.32 * s + up * 0.38 * s,
                     (0.18 * s, 0.16 * s), 0)
        _capsule(canvas, centre - across * 0.55 * s - up * 0.05 * s,
                 centre + across * 0.15 * s + up * 0.05 * s, 0.14 * s)
        # the wrist going down
        _capsule(canvas, centre - up * 0.4 * s, centre - up * 1.6 * s, 0.42 * s)
    if family == "train":
        _capsule(canvas, centre - up * 0.6 * s, centre - up * 1.8 * s, 0.4 * s)  # the wrist
    return canvas


def _object_layer(shape_hw, fr: _Frame, rng: np.random.Generator, name: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Supersampled coverage and a per-pixel colour (image size) of a held object."""
    h, w = shape_hw
    canvas = np.zeros((h * _SS, w * _SS), np.uint8)
    colour = np.zeros((h, w, 3), np.float32)
    s = fr.iod
    c = fr.point(rng.uniform(-0.4, 0.4), rng.uniform(0.1, 0.5))
    tilt = math.degrees(math.atan2(fr.d[1], fr.d[0])) - 90 + rng.uniform(-20, 20)
    rot = cv2.getRotationMatrix2D((0.0, 0.0), -tilt, 1.0)[:, :2]

    def rect(cx, cy, half_w, half_h):
        pts = np.array([[-half_w, -half_h], [half_w, -half_h], [half_w, half_h], [-half_w, half_h]])
        return c + (pts + [cx, cy]) @ rot.T

    palette = np.array(rng.choice([[40, 40, 40], [235, 235, 235], [40, 40, 180], [170, 100, 30],
                                   [60, 150, 60], [30, 160, 220], [200, 200, 200]]), np.float32)
    if name == "cup":
        _poly(canvas, rect(0, 0.2 * s, 0.45 * s, 0.7 * s))
        _ellipse(canvas, c + np.array([0, -0.5 * s]) @ rot.T, (0.45 * s, 0.12 * s), tilt)
        ring = np.zeros_like(canvas)
        hc = c + np.array([0.6 * s, 0.2 * s]) @ rot.T
        cv2.ellipse(ring, tuple(_to_px(hc)[0, 0]), (int(0.25 * s * _SS), int(0.3 * s * _SS)),
                    tilt, 0, 360, 255, max(int(0.1 * s * _SS), 1), cv2.LINE_AA)
        canvas = np.maximum(canvas, ring)
    elif name == "microphone":
        _ellipse(canvas, c, (0.42 * s, 0.42 * s), 0)
        _poly(canvas, rect(0, 1.3 * s, 0.16 * s, 0.9 * s))
        palette = np.array(rng.choice([[30, 30, 30], [70, 70, 70], [150, 150, 150]]), np.float32)
    elif name == "phone":
        _poly(canvas, rect(0, 0.2 * s, 0.5 * s, 0.95 * s))
        palette = np.array(rng.choice([[20, 20, 20], [50, 50, 55], [210, 210, 215]]), np.float32)
    else:  # book
        _poly(canvas, rect(0, 0.1 * s, 1.1 * s, 0.8 * s))
    colour[:] = palette
    # texture: a soft light gradient and a little noise; lines of text on a book
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    grad = 1.0 + 0.25 * ((xx - c[0]) * fr.u[0] + (yy - c[1]) * fr.u[1]) / max(s, 1.0) * \
        rng.uniform(-1, 1)
    colour *= np.clip(grad, 0.6, 1.4)[..., None]
    if name == "microphone":
        mesh = ((np.sin(xx * 6.0 / max(0.1 * s, 1)) * np.sin(yy * 6.0 / max(0.1 * s, 1))) > 0.3)
        colour *= np.where(mesh, 1.35, 0.85)[..., None]
    if name == "book":
        lines = (np.sin(((yy - c[1]) * fr.d[1] + (xx - c[0]) * fr.d[0]) * math.pi
                        / max(0.09 * s, 1.0)) > 0.6)
        colour = np.where(lines[..., None], colour * 0.45, colour)
    return canvas, colour


def _donor_head(donor: np.ndarray, donor_box: np.ndarray, fr: _Frame, shape_hw,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Coverage (image size, float 0-1) and colour of a donor's head placed in front."""
    h, w = shape_hw
    x1, y1, x2, y2 = (float(v) for v in donor_box)
    bw, bh = x2 - x1, y2 - y1
    back = rng.random() < 0.5  # the back of a head: only hair shows
    if back:
        src = np.array([x1 - 0.05 * bw, y1 - 0.12 * bh, x2 + 0.05 * bw, y1 + 0.3 * bh])
    else:
        src = np.array([x1 - 0.15 * bw, y1 - 0.2 * bh, x2 + 0.15 * bw, y2 + 0.1 * bh])
    sx0, sy0 = int(max(src[0], 0)), int(max(src[1], 0))
    sx1, sy1 = int(min(src[2], donor.shape[1])), int(min(src[3], donor.shape[0]))
    patch = donor[sy0:sy1, sx0:sx1]
    if patch.shape[0] < 4 or patch.shape[1] < 4:
        patch = np.full((16, 16, 3), 40, np.uint8)
    width = fr.width * rng.uniform(0.9, 1.5)
    height = width * rng.uniform(1.0, 1.3) * (patch.shape[0] / max(patch.shape[1], 1)) ** 0.3
    top = fr.point(0, 0, origin=fr.nose) + fr.d * fr.iod * rng.uniform(-0.35, 0.15)
    centre = top + fr.d * height / 2 + fr.u * fr.width * rng.uniform(-0.45, 0.45)
    # Warp the patch onto an axis-aligned rectangle around the centre (heads stay upright).
    dst = np.float32([[centre[0] - width / 2, centre[1] - height / 2],
                      [centre[0] + width / 2, centre[1] - height / 2],
                      [centre[0] - width / 2, centre[1] + height / 2]])
    srcp = np.float32([[0, 0], [patch.shape[1], 0], [0, patch.shape[0]]])
    m = cv2.getAffineTransform(srcp, dst)
    colour = cv2.warpAffine(patch, m, (w, h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    canvas = np.zeros((h * _SS, w * _SS), np.uint8)
    _ellipse(canvas, centre, (width / 2, height / 2), rng.uniform(-10, 10))
    cover = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    if rng.random() < 0.5:  # nearer to the camera: out of focus
        colour = cv2.GaussianBlur(colour, (0, 0), max(0.04 * fr.iod, 0.5))
    colour *= rng.uniform(0.6, 1.1)
    return cover, colour


def render_cover(
    image: np.ndarray,
    landmarks,
    box,
    *,
    kind: str | None = None,
    family: str = "train",
    rng: np.random.Generator | None = None,
    donors: Sequence[tuple[np.ndarray, np.ndarray]] = (),
) -> np.ndarray:
    """Cover the lower face with a hand, another head or a held object; not a mask.

    Args:
        image: BGR uint8 (H, W, 3); not modified.
        landmarks: (5, 2) pixel landmarks (YuNet order).
        box: the face box ``x1, y1, x2, y2``.
        kind: one of :data:`COVER_KINDS`; None draws one (a head needs ``donors``).
        family: ``"train"`` or ``"held_out"``: the shapes of each kind used for
            training and those kept back for the held-out check (see the module).
        rng: random generator; default ``np.random.default_rng(0)``.
        donors: ``(image, face box)`` pairs of other people, for ``head``.

    Returns:
        A new BGR uint8 image of the same shape.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be BGR uint8 (H, W, 3), got {img.dtype} {img.shape}")
    if family not in COVER_FAMILIES:
        raise ValueError(f"family must be one of {COVER_FAMILIES}, got {family!r}")
    rng = np.random.default_rng(0) if rng is None else rng
    kinds = [k for k in COVER_KINDS if k != "head" or donors]
    kind = kind or str(rng.choice(kinds))
    if kind not in COVER_KINDS:
        raise ValueError(f"kind must be one of {COVER_KINDS}, got {kind!r}")
    if kind == "head" and not donors:
        raise ValueError("a head cover needs donors: (image, face box) pairs of other people")
    fr = _Frame(landmarks, box)
    h, w = img.shape[:2]
    if kind == "head":
        donor, donor_box = donors[int(rng.integers(len(donors)))]
        cover, colour = _donor_head(np.asarray(donor), np.asarray(donor_box, np.float64), fr,
                                    (h, w), rng)
    else:
        if kind == "hand":
            canvas = _hand_layer((h, w), fr, rng, family)
            skin = _skin_colour(img, fr, rng)
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
            side = (xx - fr.mouth_c[0]) * fr.u[0] + (yy - fr.mouth_c[1]) * fr.u[1]
            shade = 1.0 + np.clip(side / (2.0 * fr.iod), -1, 1) * rng.uniform(-0.2, 0.2)
            noise = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0),
                                     max(0.05 * fr.iod, 0.5))
            colour = skin[None, None, :] * (shade + 0.04 * noise)[..., None]
        else:
            canvas, colour = _object_layer((h, w), fr, rng, str(rng.choice(_OBJECTS[family])))
            colour *= _scene_gain(img).astype(np.float32)
        cover = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
        if kind == "hand":  # creases between fingers and knuckles: darker inside edges
            edge = cv2.GaussianBlur(cover, (0, 0), max(0.03 * fr.iod, 0.5))
            colour *= (0.8 + 0.2 * np.clip(edge * 1.3, 0, 1))[..., None]
    cover = cv2.GaussianBlur(cover, (0, 0), max(0.45, 0.02 * fr.iod))
    # a faint shadow under the cover, then the cover itself
    shadow = cv2.GaussianBlur(cover, (0, 0), max(0.08 * fr.iod, 0.6))
    out = img.astype(np.float32) * (1.0 - 0.25 * shadow * (1.0 - cover))[..., None]
    out = out * (1.0 - cover[..., None]) + colour * cover[..., None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
