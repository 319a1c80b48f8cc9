"""Matching face embeddings against enrolled templates.

:class:`EmbeddingMatcher` is exact, vectorised cosine search over unit-length
templates, with separate thresholds for masked and unmasked probes. The gallery
stores (SQLite, MongoDB) load their templates into one of these.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class EmbeddingMatcher:
    """Exact top-1 cosine search with mask-aware thresholds.

    Attributes:
        names: (T,) person name per template.
        embeddings: (T, D) float32 unit-length templates.
        masked: (T,) bool, True for templates of a (synthetically) masked face.
        threshold: minimum similarity for unmasked probes, -1..1 (higher is stricter).
        masked_threshold: the same for masked probes.

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
    _unit: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        emb = np.asarray(self.embeddings, np.float32)
        if emb.ndim != 2:
            raise ValueError("embeddings must be (T, D)")
        self.names = np.asarray(self.names, dtype=object)
        self.masked = np.asarray(self.masked, bool) if len(self.masked) else np.zeros(len(emb), bool)
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

    def identify(self, embeddings: np.ndarray, masked: np.ndarray) -> list[tuple[str | None, float]]:
        """Best person per probe: ``(name, similarity)``, name None below the threshold.

        Masked probes are compared with masked templates and unmasked ones with plain
        templates when the gallery has both kinds; otherwise with all templates.
        """
        out: list[tuple[str | None, float]] = []
        if len(embeddings) == 0:
            return out
        if len(self) == 0:
            return [(None, 0.0)] * len(embeddings)
        masked = np.asarray(masked, bool).reshape(-1)
        sims_all = self.similarities(embeddings)
        has_masked, has_plain = self.masked.any(), (~self.masked).any()
        for i in range(len(embeddings)):
            sel = np.ones(len(self), bool)
            if masked[i] and has_masked:
                sel = self.masked
            elif not masked[i] and has_plain:
                sel = ~self.masked
            sims = np.where(sel, sims_all[i], -np.inf)
            j = int(np.argmax(sims))
            best = float(sims[j])
            thr = self.masked_threshold if masked[i] else self.threshold
            out.append((str(self.names[j]) if best >= thr else None, round(best, 6)))
        return out
