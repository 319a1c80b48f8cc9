"""Synthetic face masks drawn onto unmasked face photos from five facial landmarks.

Used at training time to turn unmasked faces into ``with_mask`` (``position="proper"``)
and ``mask_incorrect`` (``position="below_nose"``: nose tip and nostrils visible, mask
over mouth and chin, or pulled down onto the chin) examples, and at run time for
mask-aware enrolment. Depends only on numpy and OpenCV and needs no data files: masks
are procedural (surgical, cloth, N95, KN95), and RGBA mask photos (MaskTheFace layout,
:class:`MaskTemplates`) are used as well when given.

Geometry
--------
All lengths are in image pixels. The five landmarks are, in YuNet / ArcFace order, the
eye on the image's left ``eL``, the eye on the image's right ``eR``, the nose tip, and
the mouth corners on the image's left and right.

*Face frame.* The origin is the eye centre ``(eL + eR) / 2``; the ``x`` axis ``u`` runs
along the eye line from ``eL`` to ``eR`` (so the frame follows roll), the ``y`` axis
``v`` is ``u`` turned 90 degrees, pointing down the face. ``iod = |eR - eL|`` is the
inter-ocular distance, ``yn`` and ``ym`` the ``y`` of the nose tip and of the mouth
centre; ``dm = ym`` is the eye-to-mouth distance.

*Yaw.* The face is modelled, row by row, as a vertical cylinder of radius ``R`` seen
from the front and turned by the yaw angle ``phi``. Eyes sit at +-25 degrees on the
cylinder, the nose tip sticks out to 1.33 ``R``. Under yaw the nose tip moves off the
eye centre by ``xn = -R sin(phi) (1.33 - cos 25deg)`` while ``iod = 2 R sin 25deg cos
phi``, which gives ``phi`` from ``xn / iod`` and then ``R`` (about 1.18 ``iod`` for a
frontal face). A mask spans the angles ``-beta .. +beta`` (about 60 degrees, so a
frontal mask reaches about 1.0-1.1 ``iod`` to each side of the centre line, the cheeks
/ face edge); its centre line is bent so that it runs through the nose tip and the
mouth centre. Projecting the cylinder makes the half on the side turned away from the
camera narrower and the near half wider; parts that turn past the silhouette collapse
onto it. Below the mouth the radius shrinks (the jaw narrows towards the chin).

*Mask surface coordinates.* A point of the mask is ``(s, y)``: ``s`` in ``[-1, 1]``
from the mask's left edge through the centre line (``s = 0``) to its right edge,
``y`` the face-frame row. Each shape is a top curve ``top(s)`` and bottom curve
``bot(s)`` through four rows:

=============  =====================================  ==================================
row            ``proper``                             ``below_nose``
=============  =====================================  ==================================
top centre     0.42-0.45 ``yn`` (nose bridge)         ``yn + k (ym - yn)`` (see below)
side top       about ``0.85-0.95 yn`` (cheek)         near the top centre row
jaw corners    ``ym + 0.3-0.45 dm``                   same + 0.05 ``dm``
bottom centre  ``ym + 0.85-0.95 dm`` (under the chin)  same + 0.05 ``dm``
=============  =====================================  ==================================

:func:`mask_polygon` returns that outline in image pixels. :func:`render_mask` fills
it with colour, texture and shading computed per pixel in ``(s, y)`` (so pleats, seams
and patterns follow the face's roll and yaw), or warps a template from its six anchor
points ``a..f`` (top-left, top centre, top-right, bottom-left, bottom centre,
bottom-right) to the six target points ``(-1, side top), (0, top centre), (1, side
top), (-1, jaw), (0, bottom centre), (1, jaw)`` with a piecewise-affine warp.
``render_mask`` perturbs the geometry by a few percent of the face size with its
``rng`` so that one face yields varied placements; ``mask_polygon`` is the nominal one.
Below the nose, ``k`` is 0.45; the mask classifier's training draws it from 0.25-1.4
(``below_nose_drop``): from just under the nostrils to a mask pulled down below the
mouth onto the chin, both worn wrongly.
"""

from __future__ import annotations

import configparser
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

MASK_POSITIONS = ("proper", "below_nose")
MASK_SHAPES = ("surgical", "cloth", "n95", "kn95")
MASK_TEXTURES = ("plain", "pleats", "fabric", "noise", "stripes", "dots", "check")

# Top edge of a mask worn below the nose, from the nose tip (0) to the mouth line (1).
_BELOW_NOSE_DROP = 0.45  # the nominal place: half way to the upper lip
#: The range of that top edge the mask classifier's training draws from (``below_nose_drop``
#: of :func:`render_mask`): from just under the nostrils to a mask pulled down onto the
#: chin, mouth showing.
BELOW_NOSE_DROP_RANGE = (0.25, 1.4)
_GAMMA = math.radians(25.0)  # eyes' angle on the face cylinder
_NOSE_RHO = 1.33  # nose tip radius / face radius
_MAX_PHI = math.radians(55.0)  # yaw clamp
_VISIBLE = math.radians(88.0)  # surface angles beyond this are behind the silhouette


@dataclass(frozen=True)
class MaskStyle:
    """How a mask looks.

    Attributes:
        shape: one of :data:`MASK_SHAPES`, or ``"template"`` to warp a template image.
        color: base colour, BGR 0-255 (unused by templates).
        texture: one of :data:`MASK_TEXTURES` (unused by templates): ``plain`` (faint
            mottling), ``pleats`` (three horizontal pleat folds), ``fabric`` (mottling
            and, on large faces, a weave), ``noise`` (stronger mottling), ``stripes``,
            ``dots``, ``check`` (two-colour patterns following the face's surface).
        opacity: 0-1 multiplier of the mask's alpha, normally 0.85-1.0.
        straps: draw ear loops (procedural shapes; templates carry their own).
        template_index: index into the :class:`MaskTemplates` given to
            :func:`render_mask` when ``shape == "template"``. It names a template
            family: the family member (frontal, ``_left``, ``_right``) whose anchor
            layout best fits the face's yaw is drawn.
    """

    shape: str
    color: tuple[int, int, int]
    texture: str
    opacity: float
    straps: bool
    template_index: int | None = None


# --------------------------------------------------------------------------- geometry

# Per shape: beta = half-angle of the mask on the face cylinder (degrees); rows as in
# the module docstring (top/side in units of yn, jaw/bottom in dm below the mouth);
# top_exp/bot_exp shape the top and bottom curves; pinch narrows the sides mid-height.
_SHAPE_GEOM = {
    "surgical": dict(
        beta=61.0, top=0.45, side=0.85, jaw=0.45, bottom=0.92, top_exp=1.3, bot_exp=1.8, pinch=0.035
    ),
    "cloth": dict(
        beta=59.0, top=0.42, side=0.95, jaw=0.28, bottom=0.92, top_exp=0.85, bot_exp=1.5, pinch=0.0
    ),
    "kn95": dict(
        beta=58.0, top=0.42, side=0.90, jaw=0.30, bottom=0.95, top_exp=0.8, bot_exp=1.1, pinch=0.0
    ),
    "n95": dict(
        beta=54.0, top=0.42, side=None, jaw=None, bottom=0.85, top_exp=2.4, bot_exp=2.4, pinch=0.0
    ),
    "template": dict(
        beta=60.0, top=0.45, side=0.95, jaw=0.40, bottom=0.92, top_exp=1.0, bot_exp=1.0, pinch=0.0
    ),
}


def _as_landmarks(landmarks) -> np.ndarray:
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (5, 2) or not np.all(np.isfinite(lm)):
        raise ValueError(
            f"landmarks must be a finite (5, 2) array of pixel (x, y), got shape {lm.shape}"
        )
    return lm


def _as_box(box) -> np.ndarray:
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.shape != (4,) or not np.all(np.isfinite(b)):
        raise ValueError(f"box must be finite x1, y1, x2, y2 pixels, got {box!r}")
    return b


class _Geometry:
    """Face frame, yaw cylinder and mask rows for one face (see the module docstring)."""

    def __init__(self, landmarks, box, position: str, shape: str, jitter: dict | None = None):
        if position not in MASK_POSITIONS:
            raise ValueError(f"position must be one of {MASK_POSITIONS}, got {position!r}")
        if shape not in _SHAPE_GEOM:
            raise ValueError(f"shape must be one of {MASK_SHAPES + ('template',)}, got {shape!r}")
        lm = _as_landmarks(landmarks)
        b = _as_box(box)
        jitter = jitter or {}
        e_l, e_r, nose, m_l, m_r = lm
        d = e_r - e_l
        iod = float(np.hypot(*d))
        self.u = d / iod if iod > 1e-6 else np.array([1.0, 0.0])
        self.v = np.array([-self.u[1], self.u[0]])
        self.origin = (e_l + e_r) / 2.0
        box_w = max(float(b[2] - b[0]), float(b[3] - b[1]), 1.0)
        iod = max(iod, 0.2 * box_w, 1.0)  # fallback for degenerate landmarks only
        xn, yn = self._to_face(nose)
        xm, ym = self._to_face((m_l + m_r) / 2.0)
        dm = max(ym, 0.5 * iod)
        yn = float(np.clip(yn, 0.25 * dm, 0.8 * dm))
        ym = dm
        self.iod, self.dm, self.xn, self.yn, self.xm, self.ym = iod, dm, xn, yn, xm, ym

        # yaw from the nose offset, then the cylinder radius and axis
        tan_phi = -2.0 * math.sin(_GAMMA) * (xn / iod) / (_NOSE_RHO - math.cos(_GAMMA))
        self.phi = float(np.clip(math.atan(tan_phi), -_MAX_PHI, _MAX_PHI))
        self.radius = iod / (2.0 * math.sin(_GAMMA) * math.cos(self.phi))
        self.x0 = self.radius * math.cos(_GAMMA) * math.sin(self.phi)

        g = dict(_SHAPE_GEOM[shape])
        self.shape = shape
        self.position = position
        self.beta = math.radians(g["beta"]) * float(jitter.get("width", 1.0))
        top = g["top"] * yn + jitter.get("top", 0.0) * dm
        bottom = ym + g["bottom"] * dm + jitter.get("bottom", 0.0) * dm
        if shape == "n95":
            side, jaw = None, None
        else:
            side = g["side"] * yn
            jaw = ym + g["jaw"] * dm + jitter.get("bottom", 0.0) * dm * 0.5
        if position == "below_nose":
            # ``drop``: where the top edge sits from the nose tip (0) to the mouth line (1)
            drop = float(jitter.get("drop", _BELOW_NOSE_DROP))
            new_top = yn + drop * (ym - yn) + abs(jitter.get("top", 0.0)) * dm * 0.5
            if side is not None:
                if shape in ("surgical", "template"):
                    side = new_top - 0.04 * dm
                else:
                    side = new_top + 0.35 * (side - top)
            top = new_top
            bottom += 0.05 * dm
            if jaw is not None:
                jaw += 0.05 * dm
        self.y_top, self.y_side, self.y_jaw, self.y_bot = top, side, jaw, bottom
        self.top_exp, self.bot_exp, self.pinch = g["top_exp"], g["bot_exp"], g["pinch"]

    # -- frames
    def _to_face(self, p) -> tuple[float, float]:
        q = np.asarray(p, dtype=np.float64) - self.origin
        return float(q @ self.u), float(q @ self.v)

    def face_to_image(self, fx, fy) -> np.ndarray:
        fx = np.asarray(fx, dtype=np.float64)[..., None]
        fy = np.asarray(fy, dtype=np.float64)[..., None]
        return self.origin + fx * self.u + fy * self.v

    def radius_at(self, y):
        y = np.asarray(y, dtype=np.float64)
        k = np.clip((y - self.ym) / (0.95 * self.dm), 0.0, 1.0)
        return self.radius * (1.0 - 0.3 * k**1.5)

    def centre_x(self, y):
        ys = [0.0, self.yn, self.ym, self.ym + self.dm]
        xs = [0.0, self.xn, self.xm, self.xm]
        return np.interp(np.asarray(y, dtype=np.float64), ys, xs)

    def alpha0(self, y):
        """Cylinder angle of the mask's centre line at row ``y`` (radians)."""
        r = self.radius_at(y)
        a = np.arcsin(np.clip((self.centre_x(y) - self.x0) / r, -0.97, 0.97)) + self.phi
        return np.clip(a, -0.75 * self.beta, 0.75 * self.beta)

    def angle(self, s, y):
        a0 = self.alpha0(y)
        s = np.asarray(s, dtype=np.float64)
        return np.where(s < 0, a0 + s * (a0 + self.beta), a0 + s * (self.beta - a0))

    def x_at_angle(self, ang, y):
        ang = np.clip(np.asarray(ang, dtype=np.float64) - self.phi, -_VISIBLE, _VISIBLE)
        return self.x0 + self.radius_at(y) * np.sin(ang)

    def surface_to_image(self, s, y) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        return self.face_to_image(self.x_at_angle(self.angle(s, y), y), y)

    def image_to_surface(self, px, py):
        """Per-pixel ``(s, y, angle, x)`` for image coordinates (arrays)."""
        qx = px - self.origin[0]
        qy = py - self.origin[1]
        fx = qx * self.u[0] + qy * self.u[1]
        fy = qx * self.v[0] + qy * self.v[1]
        r = self.radius_at(fy)
        ang = np.arcsin(np.clip((fx - self.x0) / r, -1.0, 1.0)) + self.phi
        a0 = self.alpha0(fy)
        s = np.where(ang >= a0, (ang - a0) / (self.beta - a0), (ang - a0) / (self.beta + a0))
        return s, fy, ang, fx

    # -- outline
    def top(self, s):
        s = np.abs(np.asarray(s, dtype=np.float64))
        if self.shape == "n95":
            yc, hy = (self.y_top + self.y_bot) / 2.0, (self.y_bot - self.y_top) / 2.0
            return yc - hy * np.clip(1.0 - s**self.top_exp, 0.0, 1.0) ** (1.0 / self.top_exp)
        return self.y_top + (self.y_side - self.y_top) * s**self.top_exp

    def bot(self, s):
        s = np.abs(np.asarray(s, dtype=np.float64))
        if self.shape == "n95":
            yc, hy = (self.y_top + self.y_bot) / 2.0, (self.y_bot - self.y_top) / 2.0
            return yc + hy * np.clip(1.0 - s**self.bot_exp, 0.0, 1.0) ** (1.0 / self.bot_exp)
        return self.y_bot - (self.y_bot - self.y_jaw) * s**self.bot_exp

    def outline(self, n: int = 32) -> np.ndarray:
        """Closed outline as (N, 2) surface coordinates (s, y), clockwise in the image."""
        s = np.linspace(-1.0, 1.0, n)
        if self.shape == "n95":
            # denser near the ends, where the superellipse turns
            s = np.sin(np.linspace(-np.pi / 2, np.pi / 2, 2 * n))
            top = np.stack([s, self.top(s)], 1)
            bot = np.stack([s[::-1], self.bot(s[::-1])], 1)
            return np.concatenate([top, bot[1:-1]])
        t = np.linspace(0.0, 1.0, max(n // 3, 4))[1:-1]
        y_r = self.top(1.0) + t * (self.bot(1.0) - self.top(1.0))
        right = np.stack([1.0 - self.pinch * np.sin(np.pi * t), y_r], 1)
        top = np.stack([s, self.top(s)], 1)
        bot = np.stack([s[::-1], self.bot(s[::-1])], 1)
        left = np.stack([-right[::-1, 0], y_r[::-1]], 1)
        return np.concatenate([top, right, bot, left])

    def polygon(self, n: int = 32) -> np.ndarray:
        o = self.outline(n)
        return self.surface_to_image(o[:, 0], o[:, 1]).astype(np.float32)

    def anchors(self) -> np.ndarray:
        """Template target points a..f (6, 2) in image pixels."""
        s = np.array([-1.0, 0.0, 1.0, -1.0, 0.0, 1.0])
        y = np.array([self.y_side, self.y_top, self.y_side, self.y_jaw, self.y_bot, self.y_jaw])
        return self.surface_to_image(s, y)


def mask_polygon(landmarks, box, position: str = "proper", shape: str = "surgical") -> np.ndarray:
    """Outline of a mask on a face, as an (N, 2) float32 array of image pixels (x, y).

    Args:
        landmarks: (5, 2) pixel landmarks in YuNet / ArcFace order (eye on the image's
            left, eye on the image's right, nose tip, mouth corner left, mouth corner
            right).
        box: face box ``x1, y1, x2, y2`` in pixels (a fallback for the face's scale
            when landmarks are degenerate).
        position: ``"proper"`` (top edge on the nose bridge, about 45% of the way from
            the eye line to the nose tip) or ``"below_nose"`` (top edge between the
            nose tip and the upper lip). The bottom edge is under the chin, about 0.9
            eye-to-mouth distances below the mouth line, in both.
        shape: one of :data:`MASK_SHAPES`, or ``"template"`` (the hexagon through the
            six template target points).

    Returns:
        Closed polygon, clockwise in the image, following roll and yaw (see the module
        docstring for the geometry).
    """
    geo = _Geometry(landmarks, box, position, shape)
    if shape == "template":
        a = geo.anchors()
        return a[[0, 1, 2, 5, 4, 3]].astype(np.float32)
    return geo.polygon()


# --------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class MaskTemplate:
    """One RGBA mask image with its six anchor points.

    Attributes:
        name: section name in ``masks.cfg`` (e.g. ``surgical_blue_left``).
        image: BGRA uint8 (H, W, 4).
        anchors: (6, 2) float32 pixels, points a..f (see :class:`MaskTemplates`).
    """

    name: str
    image: np.ndarray
    anchors: np.ndarray

    @property
    def family(self) -> str:
        for suffix in ("_left", "_right"):
            if self.name.endswith(suffix):
                return self.name[: -len(suffix)]
        return self.name

    @cached_property
    def mean_color(self) -> tuple[int, int, int]:
        """Mean BGR colour of the opaque pixels."""
        a = self.image[:, :, 3] > 128
        if not a.any():
            return (200, 200, 200)
        return tuple(int(c) for c in self.image[:, :, :3][a].mean(0).round())

    @property
    def centre_fraction(self) -> float:
        """Where the top centre b lies between a (0) and c (1): 0.5 frontal, <0.5 turned left."""
        a, b, c = self.anchors[:3]
        return float((b[0] - a[0]) / max(c[0] - a[0], 1e-6))


class MaskTemplates:
    """RGBA mask images with 6 anchor points each, in the MaskTheFace layout.

    A folder with ``masks.cfg`` (INI: sections with ``template: masks/templates/x.png``,
    ``mask_a: x, y`` ... ``mask_f: x, y``; a = top-left (left cheek at nose level),
    b = top centre (nose bridge), c = top-right, d = bottom-left (jaw), e = bottom
    centre (chin), f = bottom-right (jaw)). Anchor coordinates are template pixels.
    Templates named ``<family>_left`` / ``<family>_right`` are turned variants of
    ``<family>``; :func:`render_mask` picks the variant that fits the face's yaw.
    """

    def __init__(self, templates: Sequence[MaskTemplate]):
        self.templates = list(templates)
        if not self.templates:
            raise ValueError("MaskTemplates needs at least one template")

    @classmethod
    def from_folder(cls, folder, max_side: int = 640) -> MaskTemplates:
        """Load templates from a MaskTheFace-style folder.

        Args:
            folder: folder containing ``masks/masks.cfg`` (template paths in the cfg
                are relative to this folder), or the ``masks`` folder itself.
            max_side: images are downscaled (anchors with them) so that their longer
                side is at most this many pixels; masks are never drawn larger.

        Raises:
            ValueError: no ``masks.cfg`` found, or no section's image could be loaded.
        """
        folder = Path(folder)
        cfg_path = next(
            (p for p in (folder / "masks" / "masks.cfg", folder / "masks.cfg") if p.is_file()), None
        )
        if cfg_path is None:
            raise ValueError(
                f"no masks/masks.cfg in {folder}: not a MaskTheFace-style template folder"
            )
        cfg = configparser.ConfigParser(inline_comment_prefixes=(";", "#"))
        try:
            cfg.read(cfg_path)
        except configparser.Error as err:
            raise ValueError(f"cannot parse {cfg_path}: {err}") from err
        roots = [cfg_path.parent.parent, cfg_path.parent]
        out = []
        for name in cfg.sections():
            sec = cfg[name]
            keys = [f"mask_{k}" for k in "abcdef"]
            if "template" not in sec or not all(k in sec for k in keys):
                continue
            rel = sec["template"].strip()
            path = next((r / rel for r in roots if (r / rel).is_file()), None)
            if path is None:
                continue
            img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if img is None:
                continue
            img = _to_bgra(img)
            try:
                anchors = np.array(
                    [[float(v) for v in sec[k].split(",")] for k in keys], np.float32
                )
            except ValueError:
                continue
            if anchors.shape != (6, 2):
                continue
            scale = max_side / max(img.shape[:2])
            if scale < 1.0:
                img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                anchors = anchors * np.float32(scale)
            out.append(MaskTemplate(name, img, anchors))
        if not out:
            raise ValueError(f"no mask template image could be loaded from {cfg_path}")
        return cls(out)

    def __len__(self) -> int:
        return len(self.templates)

    def __getitem__(self, i: int) -> MaskTemplate:
        return self.templates[i]

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.templates]

    def family_heads(self) -> list[int]:
        """One index per family, the frontal member where there is one."""
        heads: dict[str, int] = {}
        for i, t in enumerate(self.templates):
            f = t.family
            if f not in heads or t.name == f:
                heads[f] = i
        return sorted(heads.values())

    def variant_for(self, index: int, centre_fraction: float) -> int:
        """Member of ``index``'s family whose top-centre position best matches."""
        fam = self.templates[index].family
        members = [i for i, t in enumerate(self.templates) if t.family == fam]
        return min(members, key=lambda i: abs(self.templates[i].centre_fraction - centre_fraction))


def _to_bgra(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint16:
        img = (img / 257.0).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 3:
        img = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], 2)
    return np.ascontiguousarray(img[:, :, :4])


# --------------------------------------------------------------------------- styles

_LIGHT_BLUE = [(226, 196, 150), (235, 205, 160), (214, 190, 140), (230, 210, 175), (220, 185, 120)]
_WHITE = [(245, 245, 245), (238, 240, 242), (232, 232, 228)]
_BLACK = [(28, 28, 30), (40, 38, 38), (18, 18, 20)]
_GREY = [(128, 128, 128), (160, 160, 160), (90, 92, 95)]
_NAVY = [(95, 45, 25), (80, 40, 30)]
_TEAL = [(190, 200, 130), (175, 205, 165)]
_PINK = [(200, 180, 240), (190, 160, 230)]
_DENIM = [(140, 95, 60), (160, 115, 80)]
_MISC = [(60, 40, 140), (40, 100, 60), (60, 140, 200), (130, 60, 110), (50, 70, 120)]
_SKINISH = [(170, 190, 215), (140, 170, 200), (120, 150, 180)]

_PALETTES = {
    "surgical": [
        (_LIGHT_BLUE, 0.56),
        (_WHITE, 0.2),
        (_BLACK, 0.1),
        (_TEAL, 0.06),
        (_PINK, 0.04),
        (_GREY, 0.04),
    ],
    "cloth": [
        (_BLACK, 0.34),
        (_NAVY, 0.12),
        (_GREY, 0.12),
        (_WHITE, 0.08),
        (_DENIM, 0.08),
        (_MISC, 0.12),
        (_PINK, 0.04),
        (_SKINISH, 0.04),
        (_LIGHT_BLUE, 0.06),
    ],
    "kn95": [(_WHITE, 0.6), (_BLACK, 0.2), (_GREY, 0.08), (_LIGHT_BLUE, 0.06), (_PINK, 0.06)],
    "n95": [(_WHITE, 0.78), (_GREY, 0.12), (_LIGHT_BLUE, 0.05), (_BLACK, 0.05)],
}
_TEXTURES = {
    "surgical": [("pleats", 1.0)],
    "cloth": [
        ("plain", 0.2),
        ("fabric", 0.35),
        ("noise", 0.15),
        ("stripes", 0.1),
        ("dots", 0.08),
        ("check", 0.12),
    ],
    "kn95": [("plain", 0.6), ("noise", 0.4)],
    "n95": [("noise", 0.6), ("plain", 0.4)],
}
_SHAPE_P = [("surgical", 0.52), ("cloth", 0.26), ("kn95", 0.13), ("n95", 0.09)]
_STRAP_P = {"surgical": 0.85, "cloth": 0.6, "kn95": 0.75, "n95": 0.8}
_TEMPLATE_P = 0.35


def _pick(rng: np.random.Generator, items):
    w = np.array([p for _, p in items], dtype=np.float64)
    return items[int(rng.choice(len(items), p=w / w.sum()))][0]


#: Mask families that no training step may use: evaluations draw their "unseen mask"
#: probes from these only (a template family of MaskTheFace photos and a procedural
#: shape), so that a model's gain is measured on masks it never saw.
HELD_OUT_TEMPLATE_FAMILIES: tuple[str, ...] = ("KN95",)
HELD_OUT_SHAPES: tuple[str, ...] = ("n95",)


def random_mask_style(
    rng: np.random.Generator,
    templates: MaskTemplates | None = None,
    *,
    shapes: Sequence[str] | None = None,
    template_families: Sequence[str] | None = None,
) -> MaskStyle:
    """Draw a realistic mask style.

    Surgical masks are mostly light blue, also white, black, teal, pink, grey; cloth
    masks mostly black, navy, grey, denim, also white, coloured, skin-near, with plain,
    fabric, noise, striped, dotted and checked textures; KN95 and N95 mostly white.
    With ``templates``, about a third of the styles use a template (gas masks rarely).

    Args:
        rng: random generator.
        templates: optional templates to choose from.
        shapes: procedural shapes allowed (default: all of :data:`MASK_SHAPES`), drawn
            with their usual weights renormalised; empty: templates only.
        template_families: template families allowed (case-insensitive; default: all);
            empty: procedural shapes only.

    Raises:
        ValueError: an unknown shape, or nothing left to draw from.
    """
    shape_p = _SHAPE_P
    if shapes is not None:
        unknown = set(shapes) - set(MASK_SHAPES)
        if unknown:
            raise ValueError(f"unknown mask shapes {sorted(unknown)}; choose from {MASK_SHAPES}")
        shape_p = [(s, p) for s, p in _SHAPE_P if s in shapes]
    heads = templates.family_heads() if templates is not None and len(templates) else []
    if template_families is not None:
        allowed = {f.lower() for f in template_families}
        heads = [i for i in heads if templates[i].family.lower() in allowed]  # type: ignore[index]
    if not shape_p and not heads:
        raise ValueError("no mask shape or template family left to draw from")
    opacity = float(1.0 - 0.15 * rng.random() ** 3)
    if heads and (not shape_p or rng.random() < _TEMPLATE_P):
        w = np.array([0.1 if "gas" in templates[i].family.lower() else 1.0 for i in heads])  # type: ignore[index]
        idx = int(heads[int(rng.choice(len(heads), p=w / w.sum()))])
        return MaskStyle("template", templates[idx].mean_color, "plain", opacity, False, idx)  # type: ignore[index]
    shape = _pick(rng, shape_p)
    palette = _pick(rng, _PALETTES[shape])
    base = np.array(palette[int(rng.integers(len(palette)))], dtype=np.float64)
    base = base * rng.uniform(0.9, 1.06) + rng.normal(0.0, 6.0, 3)
    color = tuple(int(c) for c in np.clip(base, 0, 255).round())
    texture = _pick(rng, _TEXTURES[shape])
    straps = bool(rng.random() < _STRAP_P[shape])
    return MaskStyle(shape, color, texture, opacity, straps, None)


def training_mask_style(rng: np.random.Generator,
                        templates: MaskTemplates | None = None) -> MaskStyle:
    """A random style from every family except the held-out ones (for training)."""
    families = None
    if templates is not None:
        held = {f.lower() for f in HELD_OUT_TEMPLATE_FAMILIES}
        families = sorted({t.family for t in templates.templates if t.family.lower() not in held})
    shapes = [s for s in MASK_SHAPES if s not in HELD_OUT_SHAPES]
    return random_mask_style(rng, templates, shapes=shapes, template_families=families)


def held_out_mask_style(rng: np.random.Generator,
                        templates: MaskTemplates | None = None) -> MaskStyle:
    """A random style from the held-out families only (for evaluation)."""
    return random_mask_style(rng, templates, shapes=HELD_OUT_SHAPES,
                             template_families=HELD_OUT_TEMPLATE_FAMILIES)


# --------------------------------------------------------------------------- rendering


def _fill_poly_aa(shape_hw, poly: np.ndarray) -> np.ndarray:
    """Anti-aliased polygon coverage, float32 0..1."""
    m = np.zeros(shape_hw, np.uint8)
    pts = np.round(poly * 16.0).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(m, [pts], 255, lineType=cv2.LINE_AA, shift=4)
    return m.astype(np.float32) / 255.0


def _smooth_noise(rng, shape_hw, sigma: float) -> np.ndarray:
    """Gaussian noise blurred by ``sigma`` px, normalised to unit std."""
    n = rng.standard_normal(shape_hw).astype(np.float32)
    if sigma > 0.3:
        n = cv2.GaussianBlur(n, (0, 0), sigma)
    sd = float(n.std())
    return n / sd if sd > 1e-6 else n


def _smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _line(d, w):
    """Soft line profile for distance d and half-width w (same units)."""
    return np.exp(-((d / w) ** 2))


def _scene_gain(image: np.ndarray) -> np.ndarray:
    """Per-channel BGR gain for the mask from the photo: a dim photo (low white point)
    gives a dimmer mask, and a colour cast (grey-world, partly applied) tints it."""
    small = image[::4, ::4] if min(image.shape[:2]) > 16 else image
    px = small.reshape(-1, 3).astype(np.float32)
    if not len(px):
        return np.ones(3)
    g = px.mean(1)
    bright = float(np.clip(np.percentile(g, 97) / 235.0, 0.5, 1.0) ** 0.8)
    mean = px.mean(0).astype(np.float64)
    tint = np.clip((mean / max(float(mean.mean()), 1.0)) ** 0.3, 0.9, 1.1)
    return bright * tint / max(float(tint.max()), 1.0)


def _illumination(roi: np.ndarray, cover: np.ndarray, iod: float) -> np.ndarray:
    """Large-scale light on the covered skin relative to its median (about 0.75-1.2)."""
    g = cv2.cvtColor(roi, cv2.COLOR_BGR2GRAY).astype(np.float32)
    w = (cover > 0.5).astype(np.float32)
    if w.sum() < 4:
        return np.ones_like(g)
    sig = max(0.6 * iod, 1.0)
    num = cv2.GaussianBlur(g * w, (0, 0), sig)
    den = cv2.GaussianBlur(w, (0, 0), sig)
    lum = num / np.maximum(den, 1e-3)
    med = float(np.median(lum[w > 0]))
    return np.clip(lum / max(med, 1.0), 0.6, 1.4) ** 0.6


def _second_colour(rng, c1: np.ndarray) -> np.ndarray:
    k = rng.random()
    if k < 0.3:
        c = np.array([240.0, 240.0, 240.0])
    elif k < 0.5:
        c = np.array([25.0, 25.0, 25.0])
    elif k < 0.75:
        c = rng.uniform(30, 230, 3)
    else:
        c = c1 * rng.choice([0.55, 1.45])
    if np.abs(c - c1).sum() < 60:
        c = 255.0 - c1
    return np.clip(c, 0, 255)


def _strap_paths(geo: _Geometry, shape: str) -> list[np.ndarray]:
    """Ear loops / head straps as image-pixel polylines (the part in front of the silhouette).

    Each runs over the cheek from a side corner of the mask towards the ear (ear loops:
    top corner to the top of the ear, bottom corner to the ear lobe; N95 head straps:
    up towards the crown and down towards the neck), ending where it turns behind the
    head's silhouette.
    """
    paths = []
    n = 16
    for side in (-1.0, 1.0):
        if shape == "n95":
            yc, hy = (geo.y_top + geo.y_bot) / 2.0, (geo.y_bot - geo.y_top) / 2.0
            starts = [(side * 0.95, yc - 0.25 * hy), (side * 0.95, yc + 0.45 * hy)]
            rises = [0.35 * geo.dm, -0.1 * geo.dm]
        else:
            h1 = geo.bot(1.0) - geo.top(1.0)
            starts = [(side, geo.top(1.0) + 0.05 * h1), (side, geo.top(1.0) + 0.9 * h1)]
            rises = [0.12 * geo.dm, 0.35 * geo.dm]
        for (s0, y0), rise in zip(starts, rises, strict=True):
            a0 = float(geo.angle(s0, y0))
            a1 = a0 + side * math.radians(22.0)
            t = np.linspace(0.0, 1.0, n)
            ang = a0 + (a1 - a0) * t
            yy = y0 - rise * t
            vis = np.abs(ang - geo.phi) <= _VISIBLE
            k = int(np.argmin(vis)) if not vis.all() else n
            if k < 2:
                continue
            paths.append(geo.face_to_image(geo.x_at_angle(ang[:k], yy[:k]), yy[:k]))
    return paths


def _procedural_layer(geo, style, rng, roi_img, ox, oy, cover, gain):
    """BGR float32 colour of the mask over the ROI (before alpha blending)."""
    h, w = cover.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    s, fy, ang, fx = geo.image_to_surface(xx + ox, yy + oy)
    top, bot = geo.top(np.clip(s, -1, 1)), geo.bot(np.clip(s, -1, 1))
    t = np.clip((fy - top) / np.maximum(bot - top, 1e-3), 0.0, 1.0)
    iod = geo.iod
    px = 1.0 / max(iod, 1e-3)  # one pixel in iod units
    arc = (ang * geo.radius_at(fy)) / iod  # horizontal surface coordinate, iod units
    vy = fy / iod  # vertical surface coordinate, iod units
    f32 = np.float32

    c1 = np.array(style.color, dtype=np.float64)
    col = np.broadcast_to(c1, (h, w, 3)).astype(np.float64)
    mod = np.ones((h, w), np.float64)
    light_az = rng.uniform(-0.5, 0.5)
    # Lambert shading around the vertical axis, darker towards the sides
    normal = np.clip(ang - geo.phi, -_VISIBLE, _VISIBLE)
    mod *= 0.62 + 0.38 * np.clip(np.cos(normal - light_az), 0.0, 1.0) ** 0.8
    # vertical: the part under the chin turns away and is in shadow
    mod *= 1.0 - 0.32 * _smoothstep(0.72, 1.0, t) ** 1.3
    mod *= 1.0 - 0.06 * (1.0 - _smoothstep(0.0, 0.12, t))  # top edge lifts off the skin
    centre_d = (fx - geo.centre_x(fy)) / iod  # distance to the centre line, iod units
    nose_zone = _smoothstep(geo.y_top - 0.05 * geo.dm, geo.yn, fy) * (
        1 - _smoothstep(geo.yn, geo.ym, fy)
    )
    if geo.position == "proper":
        # highlight on the nose ridge, and shade beside it
        mod *= (
            1.0
            + 0.08 * nose_zone * _line(centre_d, 0.18)
            - 0.05 * nose_zone * _line(np.abs(centre_d) - 0.35, 0.15)
        )
    spec_k = 0.0
    shape = style.shape
    tex = style.texture

    h_px = geo.y_bot - geo.y_top  # mask height in pixels
    lw = max(0.9 / h_px, 0.006)  # about one pixel, in units of t
    if tex == "pleats":
        # three pleats across the middle: a step with a dark fold line
        t2 = 0.5 + (t - 0.5) * (1.0 + 0.18 * s**2)
        lo, hi = 0.24, 0.78
        p = np.clip((t2 - lo) / (hi - lo), 0.0, 0.9999) * 3.0
        frac = p - np.floor(p)
        band = (t2 > lo) & (t2 < hi)
        mod *= np.where(band, 0.95 + 0.08 * frac, 1.0)
        for k in range(4):
            tk = lo + k * (hi - lo) / 3.0
            mod *= 1.0 - 0.22 * _line(t2 - tk, lw * 1.3)
            mod *= 1.0 + 0.06 * _line(t2 - tk + 2.5 * lw, lw * 1.5)
    if shape == "surgical":
        s_eff = np.abs(s) / np.maximum(1.0 - geo.pinch * np.sin(np.pi * t), 0.5)
        # bound edges: top/bottom hems and side hems, a little flatter and brighter
        hem = np.maximum(_smoothstep(0.09, 0.07, t), _smoothstep(0.91, 0.93, t))
        hem = np.maximum(hem, _smoothstep(0.9, 0.93, s_eff))
        mod *= 1.0 + 0.05 * hem
        mod *= 1.0 - 0.12 * (_line(t - 0.085, lw) + _line(t - 0.915, lw)) * (s_eff < 0.92)
        # nose wire along the top
        mod *= 1.0 + 0.05 * _line(t - 0.035, 0.02) * (np.abs(s) < 0.4)
        spec_k = 0.03
    elif shape == "cloth":
        mod *= 1.0 - 0.25 * _line(centre_d, max(0.7 * px, 0.012)) * (t > 0.02)
        mod *= 1.0 + 0.05 * np.sign(centre_d) * np.sign(light_az + 1e-3) * _line(centre_d, 0.25)
        # soft wrinkles
        for _ in range(int(rng.integers(1, 4))):
            th = rng.uniform(0, np.pi)
            fr = rng.uniform(2.0, 5.0)
            mod *= 1.0 + rng.uniform(0.02, 0.05) * np.sin(
                2 * np.pi * fr * (arc * np.cos(th) + vy * np.sin(th)) + rng.uniform(0, 6.3)
            )
        spec_k = rng.uniform(0.02, 0.07)
    elif shape == "kn95":
        side_sign = np.sign(centre_d)
        mod *= 1.0 + 0.1 * side_sign * np.sign(light_az + 1e-3) * np.exp(-np.abs(centre_d) / 0.35)
        mod *= 1.0 - 0.2 * _line(centre_d, max(0.6 * px, 0.01))
        # heat-sealed border lines along top and bottom edges
        dash = 0.75 + 0.25 * (np.sin(2 * np.pi * arc / 0.06) > 0) if iod > 60 else 1.0
        mod *= 1.0 - 0.14 * (_line(t - 0.07, lw) + _line(t - 0.93, lw)) * dash
        spec_k = 0.03
    elif shape == "n95":
        r = (np.abs(s) ** 2.4 + np.abs(2 * t - 1) ** 2.4) ** (1 / 2.4)
        mod *= 0.86 + 0.14 * np.sqrt(np.clip(1 - r**2, 0, 1))
        mod *= 1.0 - 0.1 * _smoothstep(0.88, 0.95, r)
        mod *= 1.0 + 0.05 * _line(t - 0.05, 0.03) * (np.abs(s) < 0.5)  # nose foam strip
        if rng.random() < 0.3:  # exhalation valve
            vs = rng.choice([-0.35, 0.35])
            vcx = float(geo.angle(vs, geo.ym)) * geo.radius / iod
            dv = np.hypot(arc - vcx, vy - (geo.ym + 0.05 * geo.dm) / iod)
            vr = rng.uniform(0.12, 0.17)
            valve_col = np.array(
                rng.choice([[70, 70, 70], [200, 200, 200], [150, 90, 40], [40, 40, 160]]),
                np.float64,
            )
            vmask = _smoothstep(vr + px, vr - px, dv)[..., None]
            col = col * (1 - vmask) + valve_col * vmask
            mod *= (
                1.0
                - 0.3 * _line(dv - vr, max(px, 0.02))
                - 0.15 * _line(dv - 0.6 * vr, max(px, 0.02))
            )
        spec_k = 0.02

    # textures
    if tex in ("fabric", "noise", "plain", "pleats"):
        amp = {"fabric": 0.06, "noise": 0.04, "plain": 0.02, "pleats": 0.025}[tex]
        mod *= 1.0 + amp * _smooth_noise(rng, (h, w), max(0.12 * iod, 1.0))
        mod *= 1.0 + 0.4 * amp * _smooth_noise(rng, (h, w), max(0.03 * iod, 0.6))
        if tex == "fabric":
            period = rng.uniform(0.035, 0.06)  # iod units
            vis = float(np.clip((period / px - 2.5) / 2.0, 0.0, 1.0))
            if vis > 0:
                mod *= 1.0 + 0.05 * vis * np.sin(2 * np.pi * arc / period) * np.sin(
                    2 * np.pi * vy / period
                )
    elif tex in ("stripes", "check", "dots"):
        c2 = _second_colour(rng, c1)
        period = rng.uniform(0.12, 0.4)  # iod units
        soft = max(px / period, 0.02)
        if tex == "dots":
            cell = period * 1.2
            gx = arc / cell
            gy = vy / cell
            gx = gx + 0.5 * (np.floor(gy) % 2)  # staggered rows
            d = np.hypot(gx - np.round(gx), gy - np.round(gy)) * cell
            rad = cell * rng.uniform(0.18, 0.32)
            k = _smoothstep(rad + px, rad - px, d)
        else:
            th = rng.choice([0.0, np.pi / 2, np.pi / 4, -np.pi / 4])
            ph = (arc * np.cos(th) + vy * np.sin(th)) / period
            k = _smoothstep(-soft, soft, np.sin(2 * np.pi * ph) - rng.uniform(-0.3, 0.5))
            if tex == "check":
                ph2 = (-arc * np.sin(th) + vy * np.cos(th)) / period
                k2 = _smoothstep(-soft, soft, np.sin(2 * np.pi * ph2) - 0.2)
                k = 0.5 * (k + k2)
        col = col * (1 - k[..., None]) + c2 * k[..., None]
        mod *= 1.0 + 0.05 * _smooth_noise(rng, (h, w), max(0.1 * iod, 1.0))

    illum = _illumination(roi_img, cover, iod).astype(np.float64)
    mod = mod * illum
    out = col * mod[..., None] * gain
    if spec_k > 0:
        spec = np.exp(-(((normal - light_az) / 0.45) ** 2)) * (1 - _smoothstep(0.7, 1.0, t))
        out = out + 255.0 * spec_k * spec[..., None] * gain
    out = out + rng.normal(0.0, rng.uniform(1.0, 3.0), out.shape)
    out = cv2.GaussianBlur(out.astype(f32), (0, 0), 0.55)
    return out


def _frame_points(anchors: np.ndarray, w: int, h: int) -> np.ndarray:
    """Eight points on a rectangle around the template image and its anchors."""
    a, b, c, d, e, f = anchors
    x_lo = min(0.0, float(anchors[:, 0].min())) - 4.0
    x_hi = max(float(w), float(anchors[:, 0].max())) + 4.0
    y_lo = min(0.0, float(anchors[:, 1].min())) - 4.0
    y_hi = max(float(h), float(anchors[:, 1].max())) + 4.0
    return np.array(
        [
            [x_lo, y_lo],
            [b[0], y_lo],
            [x_hi, y_lo],
            [x_hi, (c[1] + f[1]) / 2],
            [x_hi, y_hi],
            [e[0], y_hi],
            [x_lo, y_hi],
            [x_lo, (a[1] + d[1]) / 2],
        ]
    )


def _lstsq_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    A = np.concatenate([src, np.ones((len(src), 1))], 1)
    m, *_ = np.linalg.lstsq(A, dst, rcond=None)
    return m  # (3, 2)


# a0 b1 c2 d3 e4 f5, frame: TL6 T7 TR8 R9 BR10 B11 BL12 L13
_TRIS = [
    (0, 1, 4),
    (0, 4, 3),
    (1, 2, 4),
    (2, 5, 4),
    (6, 7, 1),
    (6, 1, 0),
    (6, 0, 13),
    (13, 0, 3),
    (12, 13, 3),
    (11, 12, 3),
    (11, 3, 4),
    (10, 11, 4),
    (10, 4, 5),
    (9, 10, 5),
    (9, 5, 2),
    (8, 9, 2),
    (7, 8, 2),
    (7, 2, 1),
]


def _warp_template(
    img_premul: np.ndarray, src_anchors: np.ndarray, dst_anchors: np.ndarray, roi
) -> np.ndarray:
    """Piecewise-affine warp of a premultiplied BGRA float32 template into the ROI."""
    ox, oy, w, h = roi
    th, tw = img_premul.shape[:2]
    src_frame = _frame_points(src_anchors, tw, th)
    m_left = _lstsq_affine(src_anchors[[0, 1, 3, 4]], dst_anchors[[0, 1, 3, 4]])
    m_right = _lstsq_affine(src_anchors[[1, 2, 4, 5]], dst_anchors[[1, 2, 4, 5]])
    m_all = _lstsq_affine(src_anchors, dst_anchors)
    homog = np.concatenate([src_frame, np.ones((8, 1))], 1)
    dst_frame = np.empty((8, 2))
    for i, m in enumerate([m_left, m_all, m_right, m_right, m_right, m_all, m_left, m_left]):
        dst_frame[i] = homog[i] @ m
    src = np.concatenate([src_anchors, src_frame]).astype(np.float32)
    dst = (np.concatenate([dst_anchors, dst_frame]) - [ox, oy]).astype(np.float32)
    label = np.full((h, w), -1, np.int32)
    for k, tri in enumerate(_TRIS):
        pts = np.round(dst[list(tri)] * 16).astype(np.int32)
        cv2.fillConvexPoly(label, pts, k, lineType=cv2.LINE_8, shift=4)
    out = np.zeros((h, w, 4), np.float32)
    for k, tri in enumerate(_TRIS):
        sel = label == k
        if not sel.any():
            continue
        ys, xs = np.nonzero(sel)
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        s3, d3 = src[list(tri)], dst[list(tri)] - np.float32([x0, y0])
        e1, e2 = s3[1] - s3[0], s3[2] - s3[0]
        if abs(float(e1[0] * e2[1] - e1[1] * e2[0])) < 1e-3:
            continue
        m = cv2.getAffineTransform(s3, d3)
        warped = cv2.warpAffine(
            img_premul,
            m,
            (int(x1 - x0), int(y1 - y0)),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0, 0),
        )
        sub = sel[y0:y1, x0:x1]
        out[y0:y1, x0:x1][sub] = warped[sub]
    return out


def _roi(points: np.ndarray, margin: float, shape_hw) -> tuple[int, int, int, int] | None:
    h, w = shape_hw
    x0 = int(max(math.floor(points[:, 0].min() - margin), 0))
    y0 = int(max(math.floor(points[:, 1].min() - margin), 0))
    x1 = int(min(math.ceil(points[:, 0].max() + margin), w))
    y1 = int(min(math.ceil(points[:, 1].max() + margin), h))
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return x0, y0, x1 - x0, y1 - y0


def _geometry_jitter(rng: np.random.Generator, drop_range: tuple[float, float] | None) -> dict:
    jitter = {
        "top": float(rng.uniform(-0.04, 0.04)),
        "bottom": float(rng.uniform(-0.06, 0.06)),
        "width": float(rng.uniform(0.95, 1.05)),
    }
    if drop_range is not None:
        jitter["drop"] = float(rng.uniform(*drop_range))
    return jitter


def render_mask(
    image: np.ndarray,
    landmarks,
    box,
    *,
    position: str = "proper",
    style: MaskStyle | None = None,
    rng: np.random.Generator | None = None,
    templates: MaskTemplates | None = None,
    below_nose_drop: tuple[float, float] | None = None,
) -> np.ndarray:
    """Draw a synthetic mask on one face; the input image is not modified.

    Procedural shapes fill the outline of :func:`mask_polygon` (slightly perturbed by
    ``rng``) with colour, texture and shading: a Lambert fall-off towards the sides,
    the shadowed part under the chin, pleat folds and hems (surgical), a centre seam
    and wrinkles (cloth), a centre ridge and sealed border lines (KN95), a domed cup
    with rim and sometimes a valve (N95); patterns follow the face's roll and yaw. The
    photo's own large-scale light on the covered skin and its white point modulate the
    mask. Edges are anti-aliased and blurred by about 2% of the inter-ocular distance,
    a faint contact shadow darkens the skin around the mask, and ear loops run from the
    mask's side corners towards the ears. Templates are warped piecewise-affinely from
    their six anchors to the six target points and lit the same way.

    Args:
        image: BGR uint8 (H, W, 3).
        landmarks: (5, 2) pixel landmarks, YuNet / ArcFace order.
        box: face box ``x1, y1, x2, y2`` in pixels.
        position: ``"proper"`` or ``"below_nose"`` (see :data:`MASK_POSITIONS`).
        style: the mask's look; ``None`` draws one with :func:`random_mask_style`.
        rng: random generator for the style, geometry jitter, lighting and noise;
            default ``np.random.default_rng(0)``.
        templates: needed when ``style.shape == "template"``.
        below_nose_drop: below the nose, the range the mask's top edge is drawn from,
            from the nose tip (0) to the mouth line (1), e.g.
            :data:`BELOW_NOSE_DROP_RANGE` (above 1 the mouth shows: a mask on the chin);
            None: the nominal place, 0.45, half way to the upper lip.

    Returns:
        A new BGR uint8 image of the same shape.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be BGR uint8 (H, W, 3), got {img.dtype} {img.shape}")
    if rng is None:
        rng = np.random.default_rng(0)
    if style is None:
        style = random_mask_style(rng, templates)
    if style.shape == "template":
        if templates is None or style.template_index is None:
            raise ValueError("a template style needs templates and a template_index")
        if not 0 <= style.template_index < len(templates):
            raise ValueError(
                f"template_index {style.template_index} out of range for {len(templates)} templates"
            )
    elif style.shape not in MASK_SHAPES:
        raise ValueError(
            f"style.shape must be one of {MASK_SHAPES + ('template',)}, got {style.shape!r}"
        )

    drop_range = below_nose_drop if position == "below_nose" else None
    geo = _Geometry(landmarks, box, position, style.shape, _geometry_jitter(rng, drop_range))
    out = img.copy()
    iod = geo.iod
    gain = _scene_gain(img)
    edge_sigma = max(0.45, 0.022 * iod)

    if style.shape == "template":
        dst = geo.anchors()
        frac = float((dst[1] - dst[0]) @ geo.u / max((dst[2] - dst[0]) @ geo.u, 1e-6))
        tmpl = templates[templates.variant_for(style.template_index, frac)]
        timg, src = tmpl.image, tmpl.anchors.astype(np.float64)
        # pre-shrink large templates so that the warp does not alias
        scale = np.linalg.norm(dst[2] - dst[0]) / max(np.linalg.norm(src[2] - src[0]), 1e-6)
        if scale < 0.5:
            k = max(2.0 * scale, 4.0 / max(timg.shape[:2]))
            timg = cv2.resize(timg, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
            src = src * k
        src_frame = _frame_points(src, timg.shape[1], timg.shape[0])
        m_all = _lstsq_affine(src, dst)
        corners = np.concatenate([src_frame, np.ones((8, 1))], 1) @ m_all
        pts = np.concatenate([dst, corners])
        roi = _roi(pts, 3 * edge_sigma + 2, img.shape[:2])
        if roi is None:
            return out
        ox, oy, w, h = roi
        f = timg.astype(np.float32) / 255.0
        premul = np.concatenate([f[:, :, :3] * f[:, :, 3:4] * 255.0, f[:, :, 3:4]], 2)
        warped = _warp_template(premul, src, dst, roi)
        alpha = np.clip(warped[:, :, 3], 0.0, 1.0)
        colour = warped[:, :, :3] / np.maximum(alpha[..., None], 1e-4)
        if scale > 1.5:
            alpha = cv2.GaussianBlur(alpha, (0, 0), 0.5)
        roi_img = img[oy : oy + h, ox : ox + w]
        illum = _illumination(roi_img, alpha, iod)
        colour = colour * (illum * rng.uniform(0.9, 1.05))[..., None] * gain.astype(np.float32)
        colour = colour + rng.normal(0.0, rng.uniform(1.0, 2.5), colour.shape).astype(np.float32)
        strap_alpha = None
        strap_col = None
    else:
        poly = geo.polygon()
        paths = _strap_paths(geo, style.shape) if style.straps else []
        pts = np.concatenate([poly] + paths) if paths else poly
        roi = _roi(pts, 3 * edge_sigma + 0.2 * iod + 2, img.shape[:2])
        if roi is None:
            return out
        ox, oy, w, h = roi
        alpha = _fill_poly_aa((h, w), poly - np.float32([ox, oy]))
        alpha = cv2.GaussianBlur(alpha, (0, 0), edge_sigma)
        roi_img = img[oy : oy + h, ox : ox + w]
        colour = _procedural_layer(geo, style, rng, roi_img, ox, oy, alpha, gain)
        strap_alpha = None
        if paths:
            thick = max(0.035 * iod, 0.8)
            lay = np.zeros((h, w), np.uint8)
            for p in paths:
                q = np.round((p - [ox, oy]) * 16).astype(np.int32).reshape(-1, 1, 2)
                cv2.polylines(
                    lay,
                    [q],
                    False,
                    255,
                    thickness=max(int(round(thick)), 1),
                    lineType=cv2.LINE_AA,
                    shift=4,
                )
            strap_alpha = lay.astype(np.float32) / 255.0
            if thick < 1.0:
                strap_alpha *= thick
            strap_alpha = cv2.GaussianBlur(strap_alpha, (0, 0), 0.4)
            c1 = np.array(style.color, np.float64)
            base = (
                c1
                if (style.shape == "cloth" or rng.random() < 0.3)
                else np.array([235.0, 235.0, 235.0])
            )
            if style.shape == "n95" and rng.random() < 0.4:
                base = np.array(
                    rng.choice([[60, 200, 230], [200, 140, 60], [235, 235, 235]]), np.float64
                )
            illum = _illumination(roi_img, np.maximum(alpha, strap_alpha), iod)
            strap_col = (base * 0.92 * gain)[None, None, :] * illum[..., None]

    roi_out = out[oy : oy + h, ox : ox + w].astype(np.float32)
    # faint contact shadow on the skin around the mask
    sh_sigma = max(0.05 * iod, 0.6)
    shadow = cv2.GaussianBlur(alpha, (0, 0), sh_sigma)
    shift = np.float32([[1, 0, 0], [0, 1, 1.6 * sh_sigma]])  # light from above: shadow falls below
    shadow = cv2.warpAffine(shadow, shift, (w, h), borderMode=cv2.BORDER_CONSTANT)
    roi_out *= (1.0 - 0.22 * shadow * (1.0 - alpha))[..., None]
    if strap_alpha is not None:
        sa = (strap_alpha * (1.0 - alpha))[..., None]
        roi_out = roi_out * (1 - sa) + strap_col.astype(np.float32) * sa
    a = (alpha * float(np.clip(style.opacity, 0.0, 1.0)))[..., None]
    roi_out = roi_out * (1.0 - a) + colour.astype(np.float32) * a
    out[oy : oy + h, ox : ox + w] = np.clip(roi_out + 0.5, 0, 255).astype(np.uint8)
    return out
