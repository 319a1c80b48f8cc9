"""Tests for maskwatch.train.split: hashes, grouping and leak-free splits."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskwatch.train import split as split_mod
from maskwatch.train.split import (
    DEFAULT_MAX_DHASH_DISTANCE,
    DEFAULT_MAX_DISTANCE,
    SplitSummary,
    difference_hash,
    group_near_duplicates,
    group_split,
    hamming_distances,
    perceptual_hash,
    pixel_digest,
    summarize_split,
)


def _shapes_image(seed: int, size: int = 160) -> np.ndarray:
    """A synthetic 'photo': smooth gradient plus random filled shapes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = np.stack(
        [rng.uniform(40, 200) + rng.uniform(-60, 60) * (xx if c % 2 else yy) for c in range(3)],
        axis=-1,
    )
    img = np.clip(base, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(4, 9))):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = int(rng.integers(0, 3))
        cx, cy = (int(v) for v in rng.integers(10, size - 10, 2))
        r = int(rng.integers(size // 10, size // 3))
        if kind == 0:
            cv2.circle(img, (cx, cy), r, colour, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(img, (cx - r, cy - r // 2), (cx + r, cy + r // 2), colour, -1)
        else:
            cv2.ellipse(
                img,
                (cx, cy),
                (r, r // 2),
                float(rng.uniform(0, 180)),
                0,
                360,
                colour,
                -1,
                cv2.LINE_AA,
            )
    return img


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def _resize(img: np.ndarray, scale: float) -> np.ndarray:
    h, w = img.shape[:2]
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(
        img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp
    )


def _naive_distance(a: int, b: int) -> int:
    return bin(int(a) ^ int(b)).count("1")


COPY_TRANSFORMS = {
    "png_roundtrip": lambda im: cv2.imdecode(cv2.imencode(".png", im)[1], cv2.IMREAD_COLOR),
    "jpeg_q70": lambda im: _jpeg(im, 70),
    "jpeg_q30": lambda im: _jpeg(im, 30),
    "half_size": lambda im: _resize(im, 0.5),
    "upscaled": lambda im: _resize(im, 1.7),
    "jpeg_q70_and_resized": lambda im: _jpeg(_resize(im, 0.6), 70),
    "brighter": lambda im: cv2.convertScaleAbs(im, alpha=1.0, beta=20),
    "gray_copy": lambda im: cv2.cvtColor(cv2.cvtColor(im, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR),
}


# ---------------------------------------------------------------- hashes


@pytest.mark.parametrize("name", sorted(COPY_TRANSFORMS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_copies_of_synthetic_images_are_within_threshold(name: str, seed: int) -> None:
    img = _shapes_image(seed)
    copy = COPY_TRANSFORMS[name](img)
    d_p = _naive_distance(perceptual_hash(img), perceptual_hash(copy))
    d_d = _naive_distance(difference_hash(img), difference_hash(copy))
    assert d_p <= DEFAULT_MAX_DISTANCE, (name, d_p)
    assert d_d <= DEFAULT_MAX_DHASH_DISTANCE, (name, d_d)


def test_different_synthetic_images_are_far() -> None:
    images = [_shapes_image(100 + i) for i in range(8)]
    noise = [
        np.random.default_rng(200 + i).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        for i in range(4)
    ]
    ph = np.array([perceptual_hash(im) for im in images + noise], np.uint64)
    dh = np.array([difference_hash(im) for im in images + noise], np.uint64)
    iu = np.triu_indices(len(ph), 1)
    d_p = hamming_distances(ph, ph)[iu]
    d_d = hamming_distances(dh, dh)[iu]
    # No pair passes the default rule, and typical distances are near half the bits.
    assert not np.any((d_p <= DEFAULT_MAX_DISTANCE) & (d_d <= DEFAULT_MAX_DHASH_DISTANCE))
    assert d_p.min() > DEFAULT_MAX_DISTANCE
    assert 20 <= np.median(d_p) <= 44


def test_hashes_are_64_bit_ints_and_accept_gray_bgra_and_flat_images() -> None:
    img = _shapes_image(3)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)
    for fn in (perceptual_hash, difference_hash):
        h = fn(img)
        assert isinstance(h, int) and 0 <= h < 2**64
        assert fn(img) == h  # deterministic
        assert fn(bgra) == h
        assert _naive_distance(fn(gray), h) <= 2  # gray conversion rounding only
        assert isinstance(fn(np.full((5, 7, 3), 128, np.uint8)), int)
        assert isinstance(fn(np.zeros((1, 1), np.uint8)), int)
    with pytest.raises(ValueError):
        perceptual_hash(np.zeros((0, 4, 3), np.uint8))


def test_phash_has_dc_bit_clear_and_31_bits_set() -> None:
    h = perceptual_hash(_shapes_image(4))
    assert h >> 63 == 0
    assert bin(h).count("1") == 31


def test_pixel_digest_depends_on_pixels_only() -> None:
    img = _shapes_image(5)
    png = cv2.imdecode(cv2.imencode(".png", img)[1], cv2.IMREAD_COLOR)
    assert pixel_digest(png) == pixel_digest(img)
    changed = img.copy()
    changed[0, 0, 0] ^= 1
    assert pixel_digest(changed) != pixel_digest(img)


def test_real_faces_copies_near_and_different_people_far(datasets: Path) -> None:
    root = datasets / "lfw-identities" / "images"
    people = sorted(p for p in root.iterdir() if p.is_dir())[:2] if root.is_dir() else []
    if len(people) < 2:
        pytest.skip(f"need two people under {root}")
    a = cv2.imread(str(sorted(people[0].iterdir())[0]))
    b = cv2.imread(str(sorted(people[1].iterdir())[0]))
    assert a is not None and b is not None
    copy = _jpeg(_resize(a, 0.5), 70)
    assert _naive_distance(perceptual_hash(a), perceptual_hash(copy)) <= DEFAULT_MAX_DISTANCE
    assert _naive_distance(difference_hash(a), difference_hash(copy)) <= DEFAULT_MAX_DHASH_DISTANCE
    assert _naive_distance(perceptual_hash(a), perceptual_hash(b)) > 2 * DEFAULT_MAX_DISTANCE
    assert _naive_distance(difference_hash(a), difference_hash(b)) > DEFAULT_MAX_DHASH_DISTANCE
    groups = group_near_duplicates(
        [perceptual_hash(x) for x in (a, copy, b)], [difference_hash(x) for x in (a, copy, b)]
    )
    assert groups.tolist() == [0, 0, 1]


# ---------------------------------------------------------------- distances


@pytest.mark.parametrize("use_bitwise_count", [True, False])
@pytest.mark.parametrize(
    ("n", "m", "chunk"), [(0, 5, 1 << 22), (7, 0, 1 << 22), (13, 11, 1 << 22), (50, 37, 40)]
)
def test_hamming_distances_match_naive_popcount(
    monkeypatch: pytest.MonkeyPatch, use_bitwise_count: bool, n: int, m: int, chunk: int
) -> None:
    if not use_bitwise_count:
        monkeypatch.delattr(np, "bitwise_count", raising=False)
    rng = np.random.default_rng(n * 100 + m)
    edge = np.array([0, 2**64 - 1, 2**63, 1], dtype=np.uint64)
    a = np.concatenate([edge, rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)])[
        : max(n, 0)
    ]
    b = rng.integers(0, 2**64 - 1, m, dtype=np.uint64, endpoint=True)
    got = hamming_distances(a, b, chunk_elements=chunk)
    assert got.shape == (len(a), len(b))
    want = np.array([[_naive_distance(x, y) for y in b] for x in a], dtype=np.int64).reshape(
        len(a), len(b)
    )
    np.testing.assert_array_equal(got, want)


def test_hamming_distances_accepts_python_ints() -> None:
    got = hamming_distances([0, 2**64 - 1], [2**64 - 1, 3])
    np.testing.assert_array_equal(got, [[64, 2], [0, 62]])


# ---------------------------------------------------------------- grouping


def test_group_near_duplicates_is_transitive() -> None:
    # A-B and B-C are 4 bits apart, A-C 8 bits: one group at max_distance=6.
    a, b, c, far = 0, 0b1111, 0b11111111, (2**64 - 1) ^ 0b1
    groups = group_near_duplicates([a, far, b, c], max_distance=6)
    assert groups.tolist() == [0, 1, 0, 0]
    # Without the bridge, A and C stay apart.
    assert group_near_duplicates([a, c], max_distance=6).tolist() == [0, 1]


def test_group_near_duplicates_dhash_vetoes_layout_lookalikes() -> None:
    ph = [0, 0b11, 0b11]
    dh = [0, 2**64 - 1, 0b1]
    assert group_near_duplicates(ph, max_distance=6).tolist() == [0, 0, 0]
    assert group_near_duplicates(ph, dh, max_distance=6, max_dhash_distance=10).tolist() == [
        0,
        1,
        0,
    ]


def test_group_near_duplicates_respects_exact_keys() -> None:
    rng = np.random.default_rng(0)
    ph = rng.integers(0, 2**63, 6, dtype=np.uint64) * 2 + 1  # far apart, almost surely
    assert group_near_duplicates(ph).tolist() == [0, 1, 2, 3, 4, 5]
    keys = ["x", None, "y", "x", None, "y"]
    assert group_near_duplicates(ph, exact_keys=keys).tolist() == [0, 1, 2, 0, 3, 2]


@pytest.mark.parametrize(
    ("ph", "expected"),
    [
        ([], []),
        ([5], [0]),
        ([7, 7, 7], [0, 0, 0]),
        ([2**64 - 1, 0, 2**64 - 1, 0, 1], [0, 1, 0, 1, 1]),
    ],
)
def test_group_ids_in_order_of_first_appearance(ph: list[int], expected: list[int]) -> None:
    groups = group_near_duplicates(np.array(ph, dtype=np.uint64), max_distance=2)
    assert groups.tolist() == expected
    assert groups.dtype.kind == "i"


def test_group_near_duplicates_handles_10k_items_fast() -> None:
    rng = np.random.default_rng(1)
    n = 10_000
    ph = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    dh = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    ph[5000:5300] = ph[0]  # one big exact cluster
    dh[5000:5300] = dh[0]
    ph[9999] = ph[1] ^ np.uint64(0b101)  # one near copy
    dh[9999] = dh[1]
    start = time.perf_counter()
    groups = group_near_duplicates(ph, dh)
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0
    assert groups[9999] == groups[1]
    assert len(np.unique(groups[5000:5300])) == 1 and groups[5000] == groups[0]
    assert groups.max() + 1 == n - 300 - 1


# ---------------------------------------------------------------- splitting


def _toy_dataset(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Groups with skewed sizes and three classes of different sizes."""
    rng = np.random.default_rng(seed)
    groups, labels = [], []
    gid = 0
    for cls, n_groups in (("with_mask", 300), ("without_mask", 200), ("mask_incorrect", 30)):
        sizes = np.where(rng.random(n_groups) < 0.1, rng.integers(2, 8, n_groups), 1)
        sizes[0] = 40  # one big copy cluster per class
        for s in sizes:
            groups += [gid] * int(s)
            labels += [cls] * int(s)
            gid += 1
    perm = rng.permutation(len(groups))
    return np.array(groups)[perm], np.array(labels)[perm]


def _split_of_each_group(groups: np.ndarray, splits: np.ndarray) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for g, s in zip(groups.tolist(), splits.tolist(), strict=True):
        out.setdefault(g, set()).add(s)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_split_never_splits_a_group(seed: int) -> None:
    groups, labels = _toy_dataset(seed)
    splits = group_split(groups, labels, seed=seed)
    assert splits.shape == groups.shape
    assert set(splits.tolist()) == {"train", "val", "test"}
    assert all(len(s) == 1 for s in _split_of_each_group(groups, splits).values())
    assert summarize_split(groups, labels, splits).n_groups_across_splits == 0


@pytest.mark.parametrize("fractions", [(0.7, 0.1, 0.2), (0.8, 0.0, 0.2), (0.5, 0.25, 0.25)])
def test_group_split_respects_fractions_per_class(fractions: tuple[float, float, float]) -> None:
    groups, labels = _toy_dataset(3)
    splits = group_split(groups, labels, fractions=fractions, seed=0)
    for cls in np.unique(labels):
        in_cls = labels == cls
        for name, frac in zip(("train", "val", "test"), fractions, strict=True):
            share = np.mean(splits[in_cls] == name)
            assert abs(share - frac) <= 0.05, (cls, name, share, frac)


def test_group_split_is_deterministic_and_seed_dependent() -> None:
    groups, labels = _toy_dataset(4)
    a = group_split(groups, labels, seed=7)
    b = group_split(groups, labels, seed=7)
    c = group_split(groups, labels, seed=8)
    np.testing.assert_array_equal(a, b)
    assert np.any(a != c)


def test_group_split_with_item_keys_ignores_item_order() -> None:
    groups, labels = _toy_dataset(5)
    keys = np.array([f"img_{i:05d}.jpg" for i in range(len(groups))])
    perm = np.random.default_rng(0).permutation(len(groups))
    # Relabel the groups in order of first appearance, as grouping shuffled input would.
    first_seen: dict[int, int] = {}
    relabelled = np.array(
        [first_seen.setdefault(g, len(first_seen)) for g in groups[perm].tolist()]
    )
    a = group_split(groups, labels, item_keys=keys, seed=3)
    b = group_split(relabelled, labels[perm], item_keys=keys[perm], seed=3)
    np.testing.assert_array_equal(a[perm], b)


@pytest.mark.parametrize(
    "sizes",
    [
        [1, 1, 1],
        [100, 1, 1],
        [1, 1, 100],
        [50, 40, 1, 1],
        [3, 1, 1, 1, 1],
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_every_split_gets_a_group_when_there_are_enough(sizes: list[int], seed: int) -> None:
    groups = np.repeat(np.arange(len(sizes)), sizes)
    labels = np.full(len(groups), "without_mask")
    splits = group_split(groups, labels, seed=seed)
    assert "test" in set(splits.tolist())
    assert set(splits.tolist()) == {"train", "val", "test"}
    assert all(len(s) == 1 for s in _split_of_each_group(groups, splits).values())


def test_small_classes_are_still_represented_in_test() -> None:
    groups, labels = _toy_dataset(6)
    extra_groups = np.arange(3) + groups.max() + 1
    groups = np.concatenate([groups, extra_groups])
    labels = np.concatenate([labels, ["rare"] * 3])
    splits = group_split(groups, labels, seed=0)
    for cls in np.unique(labels):
        assert np.any(splits[labels == cls] == "test"), cls


def test_group_class_is_the_majority_label() -> None:
    # Group 0 has 3 "a" and 1 "b": it is an "a" group, stratified with the "a" groups.
    groups = np.array([0, 0, 0, 0, 1, 2, 3])
    labels = np.array(["a", "a", "b", "a", "b", "b", "b"])
    splits = group_split(groups, labels, fractions=(0.5, 0.0, 0.5), seed=0)
    assert len(set(splits[:4].tolist())) == 1
    # The lone "a" group cannot be split, so it takes the largest share: train.
    assert splits[0] == "train"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"fractions": (0.7, 0.3)}, ValueError),
        ({"fractions": (0.7, -0.1, 0.4)}, ValueError),
        ({"fractions": (0.0, 0.0, 0.0)}, ValueError),
    ],
)
def test_group_split_rejects_bad_fractions(kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        group_split([0, 1, 2], ["a", "a", "a"], **kwargs)


def test_group_split_rejects_length_mismatch() -> None:
    with pytest.raises(ValueError):
        group_split([0, 1, 2], ["a", "a"])


def test_summarize_split_counts() -> None:
    groups = np.array([0, 0, 1, 2, 2, 2, 3])
    labels = np.array(
        [
            "with_mask",
            "with_mask",
            "without_mask",
            "without_mask",
            "without_mask",
            "without_mask",
            "with_mask",
        ]
    )
    splits = np.array(["test", "test", "train", "train", "train", "train", "val"])
    summary = summarize_split(groups, labels, splits)
    assert isinstance(summary, SplitSummary)
    assert summary.n_items == 7
    assert summary.n_groups == 4
    assert summary.n_duplicate_groups == 2
    assert summary.n_items_in_duplicate_groups == 5
    assert summary.n_groups_across_splits == 0
    assert list(summary.per_split_counts) == ["train", "val", "test"]
    assert summary.per_split_counts["train"] == {"with_mask": 0, "without_mask": 4}
    assert summary.per_split_counts["test"] == {"with_mask": 2, "without_mask": 0}
    as_dict = summary.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict


def test_summarize_split_detects_leaks() -> None:
    summary = summarize_split([0, 0, 1], ["a", "a", "b"], ["train", "test", "train"])
    assert summary.n_groups_across_splits == 1


def test_end_to_end_copies_end_up_in_one_split() -> None:
    originals = [_shapes_image(300 + i, size=96) for i in range(30)]
    images, labels = [], []
    for i, img in enumerate(originals):
        copies = [img] + ([_jpeg(_resize(img, 0.7), 70), _jpeg(img, 40)] if i % 3 == 0 else [])
        images += copies
        labels += ["with_mask" if i % 2 else "without_mask"] * len(copies)
    groups = group_near_duplicates(
        [perceptual_hash(im) for im in images],
        [difference_hash(im) for im in images],
        exact_keys=[pixel_digest(im) for im in images],
    )
    assert groups.max() + 1 == len(originals)
    splits = group_split(groups, labels, seed=0)
    assert all(len(s) == 1 for s in _split_of_each_group(groups, splits).values())


def test_module_exports() -> None:
    for name in split_mod.__all__:
        assert hasattr(split_mod, name)
