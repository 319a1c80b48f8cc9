"""Matching face embeddings against enrolled templates.

:class:`EmbeddingMatcher` is vectorised cosine search over unit-length templates,
with separate thresholds for masked and unmasked probes. It is exact up to
:data:`APPROX_MIN_TEMPLATES` templates; above that it searches an approximate index
(:class:`ApproximateIndex`, faiss inverted lists, the ``[ann]`` extra) and falls back
to exact search, with a warning, when faiss is not installed. The gallery stores
(SQLite, MongoDB) load their templates into one of these.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Templates (of the kind searched: masked or plain) above which the matcher uses an
#: approximate index; at or below it, search is exact. One exact search over 100,000
#: 128-d templates takes a few milliseconds on a 2-core CPU.
APPROX_MIN_TEMPLATES = 100_000


def faiss_available() -> bool:
    """True when faiss (the ``[ann]`` extra) can be imported."""
    try:
        import faiss  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


class ApproximateIndex:
    """Approximate top-1 inner-product search over unit vectors (faiss ``IndexIVFFlat``).

    The templates are split into ``nlist`` cells by k-means (about 2 x sqrt(T)); a
    search compares the probe with the templates of the ``nprobe`` nearest cells only
    (about 1/8 of them by default), exactly, in float32. Building takes seconds
    (k-means on at most 40 templates per cell, then one assignment pass), which matters
    because the gallery rebuilds its matcher whenever templates change; a graph index
    (HNSW) finds the exact neighbour more often but took minutes to build 200,000
    templates here. ``benchmarks/bench_search.py --approximate`` measures recall
    against exact search and latency.

    Args:
        unit: (T, D) float32 unit-length templates.
        nlist: cells; default ``2 * sqrt(T)``, at least 1.
        nprobe: cells searched per probe; default ``max(32, nlist // 8)``. Higher
            finds the exact neighbour more often, linearly slower.
        seed: k-means seed, so that a rebuild gives the same index.
        threads: OpenMP threads of faiss (None: its default, all cores).

    Raises:
        ImportError: faiss is not installed (``pip install 'maskwatch[ann]'``).
    """

    def __init__(self, unit: np.ndarray, nlist: int | None = None, nprobe: int | None = None,
                 seed: int = 0, threads: int | None = None) -> None:
        try:
            import faiss  # noqa: PLC0415 - optional, only for galleries past APPROX_MIN_TEMPLATES
        except ImportError as exc:
            raise ImportError("approximate search needs faiss: "
                              "pip install 'maskwatch[ann]'") from exc
        x = np.ascontiguousarray(unit, np.float32)
        n, dim = x.shape
        if threads is not None:
            faiss.omp_set_num_threads(int(threads))
        self.nlist = int(nlist) if nlist else max(1, int(round(2 * math.sqrt(n))))
        self.nlist = min(self.nlist, max(n, 1))
        self.nprobe = min(int(nprobe) if nprobe else max(32, self.nlist // 8), self.nlist)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        train = (x if n <= 40 * self.nlist
                 else x[np.sort(rng.choice(n, 40 * self.nlist, replace=False))])
        index.cp.seed = int(seed)
        index.train(train)
        index.add(x)
        index.nprobe = self.nprobe
        self._index = index
        self._quantizer = quantizer  # the index holds a raw pointer to it

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def search(self, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best template per unit-length probe: ``(rows (N,) int64, similarities (N,) float32)``.

        A row is -1 (similarity -inf) only when the searched cells hold no template.
        """
        q = np.ascontiguousarray(np.asarray(probes, np.float32).reshape(len(probes), -1))
        sims, rows = self._index.search(q, 1)
        sims = np.where(rows[:, 0] >= 0, sims[:, 0], -np.inf).astype(np.float32)
        return rows[:, 0].astype(np.int64), sims


@dataclass
class EmbeddingMatcher:
    """Exact top-1 cosine search with mask-aware thresholds.

    Attributes:
        names: (T,) person name per template.
        embeddings: (T, D) float32 unit-length templates.
        masked: (T,) bool, True for templates of a (synthetically) masked face.
        threshold: minimum similarity for unmasked probes, -1..1 (higher is stricter).
        masked_threshold: the same for masked probes.
        approximate: None (default): search an :class:`ApproximateIndex` when the
            templates searched number more than ``approx_min_templates`` and faiss is
            installed, exactly otherwise; True / False: always / never (True needs faiss).
        approx_min_templates: the size above which ``approximate=None`` turns to the index.

    Example:
        >>> m = EmbeddingMatcher.from_arrays(["ann"], np.eye(1, 4, dtype=np.float32))
        >>> m.identify(np.eye(1, 4, dtype=np.float32), np.array([False]))
        [('ann', 1.0)]
    """

    names: np.ndarray
    embeddings: np.ndarray
    masked: np.ndarray
    threshold: float = 0.4
    masked_threshold: float = 0.4
    approximate: bool | None = None
    approx_min_templates: int = APPROX_MIN_TEMPLATES
    _unit: np.ndarray = field(init=False, repr=False)
    _indexes: dict[str, Any] = field(init=False, repr=False, default_factory=dict)
    _index_lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        emb = np.asarray(self.embeddings, np.float32)
        if emb.ndim != 2:
            raise ValueError("embeddings must be (T, D)")
        self.names = np.asarray(self.names, dtype=object)
        self.masked = (np.asarray(self.masked, bool) if len(self.masked)
                       else np.zeros(len(emb), bool))
        if not (len(self.names) == len(emb) == len(self.masked)):
            raise ValueError("names, embeddings and masked flags differ in length")
        self._unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        self.embeddings = emb

    @classmethod
    def from_arrays(cls, names: list[str], embeddings: np.ndarray, masked: list[bool] | None = None,
                    **kw: float) -> EmbeddingMatcher:
        return cls(np.asarray(names, dtype=object), embeddings,
                   np.asarray(masked if masked is not None else [False] * len(names), bool), **kw)

    def __len__(self) -> int:
        return len(self.names)

    def similarities(self, probes: np.ndarray, templates: np.ndarray | None = None) -> np.ndarray:
        """(N, T) cosine similarities of probes to the templates selected by a bool mask."""
        p = np.asarray(probes, np.float32).reshape(len(probes), -1)
        p = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
        t = self._unit if templates is None else self._unit[templates]
        return p @ t.T

    def _selection(self, masked_probe: bool, masked_templates: bool = True) -> str:
        """Which templates a probe is compared with: "masked", "plain" or "all"."""
        if masked_probe and masked_templates and self.masked.any():
            return "masked"
        if (not masked_probe or not masked_templates) and (~self.masked).any():
            return "plain"
        return "all"

    def _index_for(self, key: str) -> tuple[Any, np.ndarray] | None:
        """The approximate index over the templates of selection ``key`` and its rows
        (template numbers), built on first use (seconds for a million templates); None
        when search stays exact."""
        with self._index_lock:
            return self._build_index(key)

    def _build_index(self, key: str) -> tuple[Any, np.ndarray] | None:
        if key in self._indexes:
            return self._indexes[key]
        rows = np.flatnonzero(self.masked if key == "masked" else ~self.masked if key == "plain"
                              else np.ones(len(self), bool))
        entry = None
        if self.approximate or (self.approximate is None and len(rows) > self.approx_min_templates):
            if self.approximate or faiss_available():
                entry = (ApproximateIndex(self._unit[rows]), rows)
                log.info("approximate index over %d %s templates (%d cells, %d searched)",
                         len(rows), key, entry[0].nlist, entry[0].nprobe)
            else:
                log.warning("%d templates: searching them exactly; pip install 'maskwatch[ann]' "
                            "for a faster approximate index", len(rows))
        self._indexes[key] = entry
        return entry

    def uses_approximate(self, masked: bool = False) -> bool:
        """Whether probes of this kind (masked or not) are searched approximately (builds
        the index when it is due and not built yet)."""
        return len(self) > 0 and self._index_for(self._selection(masked)) is not None

    def identify(self, embeddings: np.ndarray, masked: np.ndarray, *,
                 masked_templates: bool = True) -> list[tuple[str | None, float]]:
        """Best person per probe: ``(name, similarity)``, name None below the threshold.

        Masked probes are compared with masked templates and unmasked ones with plain
        templates when the gallery has both kinds; otherwise with all templates. With
        ``masked_templates=False`` masked probes are compared with the plain templates
        too (an embedder that maps masked faces onto plain ones: the masked-face
        student), still with ``masked_threshold``.
        Exact up to ``approx_min_templates`` templates of the kind searched, then
        approximate (see :class:`ApproximateIndex`).
        """
        out: list[tuple[str | None, float]] = []
        if len(embeddings) == 0:
            return out
        if len(self) == 0:
            return [(None, 0.0)] * len(embeddings)
        masked = np.asarray(masked, bool).reshape(-1)
        keys = [self._selection(bool(m), masked_templates) for m in masked]
        if any(self._index_for(k) is not None for k in set(keys)):
            return self._identify_indexed(embeddings, masked, keys)
        sims_all = self.similarities(embeddings)
        has_masked, has_plain = self.masked.any(), (~self.masked).any()
        for i in range(len(embeddings)):
            sel = np.ones(len(self), bool)
            if masked[i] and masked_templates and has_masked:
                sel = self.masked
            elif (not masked[i] or not masked_templates) and has_plain:
                sel = ~self.masked
            sims = np.where(sel, sims_all[i], -np.inf)
            j = int(np.argmax(sims))
            best = float(sims[j])
            thr = self.masked_threshold if masked[i] else self.threshold
            out.append((str(self.names[j]) if best >= thr else None, round(best, 6)))
        return out

    def _identify_indexed(self, embeddings: np.ndarray, masked: np.ndarray,
                          keys: list[str]) -> list[tuple[str | None, float]]:
        p = np.asarray(embeddings, np.float32).reshape(len(embeddings), -1)
        p = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
        best_j = np.zeros(len(p), np.int64)
        best_s = np.full(len(p), -np.inf, np.float32)
        keys_arr = np.array(keys)
        for key in set(keys):
            sel = keys_arr == key
            entry = self._index_for(key)
            if entry is None:  # this kind is small enough: exact
                rows = np.flatnonzero(self.masked if key == "masked"
                                      else ~self.masked if key == "plain"
                                      else np.ones(len(self), bool))
                sims = p[sel] @ self._unit[rows].T
                k = np.argmax(sims, axis=1)
                best_j[sel], best_s[sel] = rows[k], sims[np.arange(len(k)), k]
            else:
                index, rows = entry
                r, sims = index.search(p[sel])
                best_j[sel], best_s[sel] = np.where(r >= 0, rows[np.maximum(r, 0)], 0), sims
        out: list[tuple[str | None, float]] = []
        for i in range(len(p)):
            thr = self.masked_threshold if masked[i] else self.threshold
            best = float(best_s[i])
            name = str(self.names[best_j[i]]) if math.isfinite(best) and best >= thr else None
            out.append((name, round(best, 6) if math.isfinite(best) else 0.0))
        return out
