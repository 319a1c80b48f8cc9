"""Leak-free, group-aware, stratified train/val/test splits.

Scraped face datasets hold exact copies and near copies of the same photo (resized,
re-encoded, re-saved under another name). A random per-image split puts copies of a
training photo into the test set and inflates accuracy. Here images are hashed
perceptually, near duplicates are grouped with union-find, and whole groups are
assigned to splits, stratified by class.

Typical use::

    ph = np.array([perceptual_hash(im) for im in images], np.uint64)
    dh = np.array([difference_hash(im) for im in images], np.uint64)
    groups = group_near_duplicates(ph, dh, exact_keys=[pixel_digest(im) for im in images])
    splits = group_split(groups, labels, item_keys=paths, seed=0)
    summary = summarize_split(groups, labels, splits).to_dict()

Default thresholds (``max_distance=8`` bits of pHash, ``max_dhash_distance=10`` bits
of dHash) were chosen by looking at merged pairs of ``mask-classification`` (4094
images): up to 8 bits, pairs that also pass the dHash check are nearly all copies
(resized, re-encoded, re-coloured, slightly cropped or pixelated), while at 10 bits
about half are different people with a similar pose and framing, and without the
dHash check different people merge already at 6-8 bits. With these defaults plus
exact pixel digests the set has 68 duplicate groups (140 images) among 2164
``with_mask`` images and 142 groups (374 images) among 1930 ``without_mask`` images,
no group larger than 6 and none mixing the two classes. Rotated or flipped copies
(augmented images) are not caught by either hash.

Note: every pHash here has exactly 31 bits set (31 of the 63 AC coefficients lie above
their median), so pHash distances are even and ``max_distance=8`` acts like 9.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

__all__ = [
    "DEFAULT_MAX_DHASH_DISTANCE",
    "DEFAULT_MAX_DISTANCE",
    "SplitSummary",
    "difference_hash",
    "group_near_duplicates",
    "group_split",
    "hamming_distances",
    "perceptual_hash",
    "pixel_digest",
    "summarize_split",
]

#: Default largest pHash Hamming distance (bits out of 64) for two images to be copies.
DEFAULT_MAX_DISTANCE = 8
#: Default largest dHash Hamming distance (bits out of 64) confirming a pHash match.
DEFAULT_MAX_DHASH_DISTANCE = 10

# Number of set bits of every byte value, for the popcount fallback.
_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
# Bit weights, most significant first, to pack 64 booleans into one uint64.
_BIT_WEIGHTS = np.left_shift(np.uint64(1), np.arange(63, -1, -1, dtype=np.uint64))


def _gray_float(image: np.ndarray) -> np.ndarray:
    """Gray float32 image from a gray, BGR or BGRA array of any numeric dtype."""
    img = np.asarray(image)
    if img.size == 0:
        raise ValueError(f"empty image of shape {img.shape}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3:
        if img.shape[2] not in (3, 4):
            raise ValueError(f"expected a gray, BGR or BGRA image, got shape {img.shape}")
        img = img[:, :, :3].astype(np.float32)
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    elif img.ndim != 2:
        raise ValueError(f"expected a gray, BGR or BGRA image, got shape {img.shape}")
    return img.astype(np.float32, copy=False)


def _pack_bits(bits: np.ndarray) -> int:
    """Pack 64 booleans (row-major, first = most significant bit) into a Python int."""
    return int(np.bitwise_or.reduce(_BIT_WEIGHTS[np.asarray(bits, bool).reshape(64)]))


def perceptual_hash(image_bgr: np.ndarray) -> int:
    """64-bit DCT perceptual hash (pHash) of an image.

    The image is turned gray, resized to 32x32 pixels (area interpolation), and
    transformed with a 2-D DCT. The top-left 8x8 block holds the lowest spatial
    frequencies, i.e. the coarse layout of the picture, which survives resizing,
    JPEG re-encoding, mild blur and global brightness/contrast changes. Each of the
    64 coefficients gives one bit: 1 when it is above the median of the 63 AC
    coefficients (the DC term, the mean brightness, is left out of the median so
    that it cannot shift it). The DC bit itself is forced to 0, so the hash carries
    63 informative bits; bits are in row-major order, DC first as the most
    significant bit.

    Args:
        image_bgr: (H, W, 3) BGR, (H, W, 4) BGRA or (H, W) gray image, any size
            (at least 1x1 pixel), any numeric dtype.

    Returns:
        The hash as a non-negative int below 2**64 (store in ``np.uint64``).
        Compare two hashes with the Hamming distance (bits, 0..64): copies of one
        photo are typically 0..8 bits apart, unrelated photos about 32.
    """
    gray = _gray_float(image_bgr)
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA)
    coeffs = cv2.dct(small)[:8, :8].reshape(64)
    median = np.median(coeffs[1:])
    bits = coeffs > median
    bits[0] = False
    return _pack_bits(bits)


def difference_hash(image_bgr: np.ndarray) -> int:
    """64-bit difference hash (dHash) of an image.

    The image is turned gray and resized to 9x8 pixels (width x height, area
    interpolation); each bit says whether a pixel is brighter than its left
    neighbour (8 comparisons per row, 8 rows, row-major, first = most significant
    bit). It encodes horizontal gradients and so complements :func:`perceptual_hash`
    (which encodes low frequencies) as a second opinion.

    Args:
        image_bgr: (H, W, 3) BGR, (H, W, 4) BGRA or (H, W) gray image, any numeric dtype.

    Returns:
        The hash as a non-negative int below 2**64 (store in ``np.uint64``).
    """
    gray = _gray_float(image_bgr)
    small = cv2.resize(gray, (9, 8), interpolation=cv2.INTER_AREA)
    bits = small[:, 1:] > small[:, :-1]
    return _pack_bits(bits)


def pixel_digest(image_bgr: np.ndarray) -> str:
    """SHA-1 hex digest of decoded pixels (shape, dtype and bytes), for ``exact_keys``.

    Two files with the same pixels (e.g. one image saved as PNG and as lossless WEBP,
    or byte-identical copies) get the same digest whatever their encoding.
    """
    img = np.ascontiguousarray(image_bgr)
    h = hashlib.sha1(f"{img.shape}|{img.dtype.str}|".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def _as_hashes(values: Any, name: str) -> np.ndarray:
    """1-D uint64 array from hashes given as a uint64/int array or a sequence of ints."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "ui":
        arr = values.reshape(-1)
        if arr.dtype.kind == "i" and arr.size and int(arr.min()) < 0:
            raise ValueError(
                f"{name}: hashes must be non-negative (use .view(np.uint64) for signed storage)"
            )
        return arr.astype(np.uint64, copy=False)
    if isinstance(values, np.ndarray) and values.dtype != object:
        raise TypeError(f"{name}: hashes must be integers, got dtype {values.dtype}")
    try:
        return np.array(
            [int(v) for v in np.asarray(values, dtype=object).reshape(-1)], dtype=np.uint64
        )
    except OverflowError as exc:
        raise ValueError(f"{name}: hashes must be ints in [0, 2**64)") from exc


def _popcount(x: np.ndarray) -> np.ndarray:
    """Number of set bits of every uint64 in ``x``, as uint8 of the same shape."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.uint8, copy=False)
    x = np.ascontiguousarray(x, dtype=np.uint64)
    return _POPCOUNT8[x.view(np.uint8).reshape(*x.shape, 8)].sum(axis=-1, dtype=np.uint8)


def hamming_distances(a: np.ndarray, b: np.ndarray, *, chunk_elements: int = 1 << 22) -> np.ndarray:
    """Pairwise Hamming distances between two sets of 64-bit hashes.

    Computed as XOR then popcount (``np.bitwise_count``, or a byte lookup table on
    older numpy), ``chunk_elements`` pairs at a time, so the temporaries stay near
    ``8 * chunk_elements`` bytes (32 MiB by default); the result itself is uint8,
    100 MB for 10k x 10k.

    Args:
        a: (N,) hashes (uint64, or ints below 2**64).
        b: (M,) hashes.
        chunk_elements: pairs per chunk (memory/speed trade-off).

    Returns:
        (N, M) uint8 matrix of distances in bits, 0..64.
    """
    a = _as_hashes(a, "a")
    b = _as_hashes(b, "b")
    out = np.empty((len(a), len(b)), dtype=np.uint8)
    if out.size == 0:
        return out
    rows = max(1, int(chunk_elements) // max(1, len(b)))
    for start in range(0, len(a), rows):
        stop = min(len(a), start + rows)
        out[start:stop] = _popcount(np.bitwise_xor(a[start:stop, None], b[None, :]))
    return out


def _connected_components(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Union-find over edges ``(u[k], v[k])`` of ``n`` nodes, vectorised.

    Returns the root of each node, which is the smallest node index of its component.
    Roots are hooked from larger to smaller index and paths are fully compressed by
    pointer jumping after each round, so ``parent[x] <= x`` always holds (no cycles).
    """
    parent = np.arange(n, dtype=np.int64)
    u = np.asarray(u, dtype=np.int64)
    v = np.asarray(v, dtype=np.int64)
    while u.size:
        pu = parent[u]
        pv = parent[v]
        cross = pu != pv
        if not cross.any():
            break
        u, v, pu, pv = u[cross], v[cross], pu[cross], pv[cross]
        lo = np.minimum(pu, pv)
        hi = np.maximum(pu, pv)
        np.minimum.at(parent, hi, lo)
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    return parent


def _first_appearance_ids(keys: np.ndarray) -> np.ndarray:
    """Relabel arbitrary int keys to 0..G-1 in order of first appearance."""
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def group_near_duplicates(
    phashes: Sequence[int] | np.ndarray,
    dhashes: Sequence[int] | np.ndarray | None = None,
    *,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    max_dhash_distance: int = DEFAULT_MAX_DHASH_DISTANCE,
    exact_keys: Sequence[Hashable | None] | None = None,
    chunk_elements: int = 1 << 22,
) -> np.ndarray:
    """Group exact and near duplicate images, transitively (union-find).

    Two items are linked when their pHash Hamming distance is ``<= max_distance``
    bits and, when ``dhashes`` is given, their dHash distance is also
    ``<= max_dhash_distance`` bits (the second hash keeps different photos with a
    similar low-frequency layout apart). Items with equal, non-None ``exact_keys``
    (e.g. :func:`pixel_digest` or a file SHA-1) are linked whatever their hashes.
    Groups are the connected components of these links, so A~B and B~C put A, B and
    C in one group even when A and C are far apart.

    Identical hash values are collapsed before the pairwise search, and the search
    runs over the upper triangle in chunks; 10k items take about a second.

    Args:
        phashes: (N,) pHashes from :func:`perceptual_hash`.
        dhashes: optional (N,) dHashes from :func:`difference_hash`.
        max_distance: largest pHash distance in bits (0..64) to link two items.
        max_dhash_distance: largest dHash distance in bits to link two items (only
            used with ``dhashes``).
        exact_keys: optional (N,) hashable keys; equal keys are always linked,
            ``None`` means no key.
        chunk_elements: pairs per distance chunk (memory/speed trade-off).

    Returns:
        (N,) int64 group ids, 0..G-1 in order of first appearance.
    """
    ph = _as_hashes(phashes, "phashes")
    n = len(ph)
    if dhashes is not None:
        dh = _as_hashes(dhashes, "dhashes")
        if len(dh) != n:
            raise ValueError(f"{n} phashes but {len(dh)} dhashes")
    else:
        dh = None
    if exact_keys is not None and len(exact_keys) != n:
        raise ValueError(f"{n} phashes but {len(exact_keys)} exact_keys")
    if n == 0:
        return np.zeros(0, dtype=np.int64)

    # Collapse identical hash (pair) values: items with equal hashes are linked anyway.
    key_cols = ph[:, None] if dh is None else np.stack([ph, dh], axis=1)
    uniq, first, inverse = np.unique(key_cols, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    u_ph = uniq[:, 0]
    u_dh = None if dh is None else uniq[:, 1]
    edges_u = [np.arange(n, dtype=np.int64)]
    edges_v = [first[inverse].astype(np.int64)]

    m = len(uniq)
    rows = max(1, int(chunk_elements) // max(1, m))
    for start in range(0, m, rows):
        stop = min(m, start + rows)
        block = _popcount(np.bitwise_xor(u_ph[start:stop, None], u_ph[None, start:]))
        i, j = np.nonzero(block <= max_distance)
        j = j + start
        i = i + start
        keep = j > i
        i, j = i[keep], j[keep]
        if u_dh is not None and i.size:
            ok = _popcount(np.bitwise_xor(u_dh[i], u_dh[j])) <= max_dhash_distance
            i, j = i[ok], j[ok]
        if i.size:
            edges_u.append(first[i].astype(np.int64))
            edges_v.append(first[j].astype(np.int64))

    if exact_keys is not None:
        seen: dict[Hashable, int] = {}
        ku, kv = [], []
        for idx, key in enumerate(exact_keys):
            if key is None:
                continue
            root = seen.setdefault(key, idx)
            if root != idx:
                ku.append(idx)
                kv.append(root)
        if ku:
            edges_u.append(np.asarray(ku, dtype=np.int64))
            edges_v.append(np.asarray(kv, dtype=np.int64))

    roots = _connected_components(n, np.concatenate(edges_u), np.concatenate(edges_v))
    return _first_appearance_ids(roots)


def _majority_label(labels: np.ndarray) -> Any:
    """Most frequent value; ties go to the smallest value in sort order."""
    values, counts = np.unique(labels, return_counts=True)
    return values[int(np.argmax(counts))]


def group_split(
    groups: Sequence[int] | np.ndarray,
    labels: Sequence[Hashable] | np.ndarray,
    *,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
    names: Sequence[str] = ("train", "val", "test"),
    item_keys: Sequence[str] | None = None,
) -> np.ndarray:
    """Assign whole groups to splits, stratified by class.

    A group's class is its most frequent label (ties: smallest label). For each class
    (in sorted order) its groups are shuffled with ``np.random.default_rng(seed)``,
    then stably sorted by size, largest first, and each group goes to the split with
    the largest remaining item deficit (``fraction * class items - items so far``),
    so that each class is divided in ``fractions`` by item count. Big copy clusters
    thus land in the split with the largest share (train) instead of dominating a
    small test set. Finally, a split with a positive fraction that got no group of a
    class receives the smallest group of the split holding the most groups of that
    class, when that split has at least two; hence every split is represented when
    a class has at least as many groups as there are splits with a positive fraction.

    The same inputs and seed always give the same output. Group ids and item order
    only matter through the order of groups before shuffling: pass ``item_keys``
    (e.g. file paths) to order groups by their smallest key instead of by group id,
    which makes the result independent of the order of the items.

    Args:
        groups: (N,) group id per item, e.g. from :func:`group_near_duplicates`.
        labels: (N,) class label per item (str or int).
        fractions: share of each split, by item count; normalised to sum to 1.
        seed: seed for ``np.random.default_rng``.
        names: split names, one per fraction.
        item_keys: optional (N,) unique sortable keys that fix the group order.

    Returns:
        (N,) array of split names (numpy str), one per item; one group never spans
        two splits.
    """
    groups = np.asarray(groups).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    n = len(groups)
    if len(labels) != n:
        raise ValueError(f"{n} groups but {len(labels)} labels")
    frac = np.asarray(fractions, dtype=np.float64).reshape(-1)
    if len(frac) != len(names) or len(frac) == 0:
        raise ValueError(f"{len(frac)} fractions but {len(names)} names")
    if (frac < 0).any() or not np.isfinite(frac).all() or frac.sum() <= 0:
        raise ValueError(f"fractions must be non-negative and not all 0, got {list(fractions)}")
    frac = frac / frac.sum()
    names_arr = np.asarray(list(names))
    if n == 0:
        return names_arr[:0]
    if item_keys is not None and len(item_keys) != n:
        raise ValueError(f"{n} groups but {len(item_keys)} item_keys")

    group_ids, item_group = np.unique(groups, return_inverse=True)
    item_group = item_group.reshape(-1)
    n_groups = len(group_ids)
    sizes = np.bincount(item_group, minlength=n_groups)
    # Canonical group order: by group id, or by the smallest item key of the group.
    if item_keys is None:
        canonical = np.arange(n_groups)
    else:
        smallest: list[Any] = [None] * n_groups
        for g, key in zip(item_group.tolist(), item_keys, strict=True):
            if smallest[g] is None or key < smallest[g]:
                smallest[g] = key
        canonical = np.array(sorted(range(n_groups), key=lambda g: smallest[g]), dtype=np.int64)

    order = np.argsort(item_group, kind="stable")
    bounds = np.cumsum(sizes)[:-1]
    members = np.split(order, bounds)
    group_class = np.array([_majority_label(labels[idx]) for idx in members])

    rng = np.random.default_rng(seed)
    group_split_idx = np.full(n_groups, -1, dtype=np.int64)
    positive = np.flatnonzero(frac > 0)
    for cls in np.unique(group_class):
        cls_groups = canonical[group_class[canonical] == cls]
        cls_groups = cls_groups[rng.permutation(len(cls_groups))]
        cls_groups = cls_groups[np.argsort(-sizes[cls_groups], kind="stable")]
        target = frac * sizes[cls_groups].sum()
        filled = np.zeros(len(frac))
        assigned: list[list[int]] = [[] for _ in frac]
        for g in cls_groups.tolist():
            deficit = np.where(frac > 0, target - filled, -np.inf)
            s = int(np.argmax(deficit))
            assigned[s].append(g)
            filled[s] += sizes[g]
        for s in positive.tolist():
            if assigned[s]:
                continue
            donor = max(positive.tolist(), key=lambda d: (len(assigned[d]), -d))
            if len(assigned[donor]) < 2:
                break
            g = min(assigned[donor], key=lambda x: (sizes[x], assigned[donor].index(x)))
            assigned[donor].remove(g)
            assigned[s].append(g)
        for s, gs in enumerate(assigned):
            group_split_idx[gs] = s
    return names_arr[group_split_idx[item_group]]


@dataclass
class SplitSummary:
    """Counts describing a grouped split.

    Attributes:
        n_items: number of items.
        n_groups: number of duplicate groups (singletons included).
        n_duplicate_groups: groups with more than one item.
        n_items_in_duplicate_groups: items that belong to such groups.
        per_split_counts: split name -> class label (as str) -> item count.
        n_groups_across_splits: groups whose items are in more than one split
            (0 for a leak-free split).
    """

    n_items: int
    n_groups: int
    n_duplicate_groups: int
    n_items_in_duplicate_groups: int
    per_split_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    n_groups_across_splits: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable) of the summary."""
        return asdict(self)


def summarize_split(
    groups: Sequence[int] | np.ndarray,
    labels: Sequence[Hashable] | np.ndarray,
    splits: Sequence[str] | np.ndarray,
) -> SplitSummary:
    """Summarise groups and per-split class counts of a split.

    Args:
        groups: (N,) group id per item.
        labels: (N,) class label per item.
        splits: (N,) split name per item, e.g. from :func:`group_split`.

    Returns:
        A :class:`SplitSummary`; splits are listed as train, val, test, then any
        other names in order of first appearance, and every class appears in every
        split (count 0 when absent).
    """
    groups = np.asarray(groups).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    splits = np.asarray(splits).reshape(-1)
    if not len(groups) == len(labels) == len(splits):
        raise ValueError(
            f"lengths differ: {len(groups)} groups, {len(labels)} labels, {len(splits)} splits"
        )
    _, item_group, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    item_group = item_group.reshape(-1)
    dup = sizes > 1
    classes = [str(c) for c in np.unique(labels)]
    seen_names = list(dict.fromkeys(str(s) for s in splits.tolist()))
    usual = [s for s in ("train", "val", "test") if s in seen_names]
    split_names = usual + [s for s in seen_names if s not in usual]
    counts: dict[str, dict[str, int]] = {s: dict.fromkeys(classes, 0) for s in split_names}
    for s, c in zip(splits.tolist(), labels.tolist(), strict=True):
        counts[str(s)][str(c)] += 1
    across = 0
    if len(groups):
        _, split_codes = np.unique(splits, return_inverse=True)
        pairs = np.unique(np.stack([item_group, split_codes.reshape(-1)], axis=1), axis=0)
        across = int((np.bincount(pairs[:, 0], minlength=len(sizes)) > 1).sum())
    return SplitSummary(
        n_items=int(len(groups)),
        n_groups=int(len(sizes)),
        n_duplicate_groups=int(dup.sum()),
        n_items_in_duplicate_groups=int(sizes[dup].sum()),
        per_split_counts=counts,
        n_groups_across_splits=across,
    )
