"""The approximate index behind EmbeddingMatcher for very large galleries, checked
against exact search on random unit vectors (skips without the [ann] extra)."""

import numpy as np
import pytest

from maskwatch.recognition import APPROX_MIN_TEMPLATES, EmbeddingMatcher

pytest.importorskip("faiss", reason="the [ann] extra (faiss-cpu) is not installed",
                    exc_type=ImportError)

from maskwatch.recognition import ApproximateIndex  # noqa: E402


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def gallery(n_people: int, per_person: int, dim: int = 128, seed: int = 0):
    """Random unit templates, ``per_person`` scattered around each person's random
    direction (cosine about 0.75 to it), and probes drawn the same way (unseen)."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(n_people, dim)))
    templates = unit(np.repeat(centres, per_person, 0)
                     + 0.9 * unit(rng.normal(size=(n_people * per_person, dim))))
    who = rng.integers(0, n_people, 400)
    probes = unit(centres[who] + 0.9 * unit(rng.normal(size=(len(who), dim))))
    names = np.repeat([f"p{i}" for i in range(n_people)], per_person)
    return names, templates, probes, who


def test_recall_against_exact_search():
    names, templates, probes, _ = gallery(3000, 10)  # 30,000 templates
    exact = np.argmax(probes @ templates.T, axis=1)
    exact_sim = np.max(probes @ templates.T, axis=1)
    index = ApproximateIndex(templates)
    assert len(index) == 30_000 and index.nprobe <= index.nlist
    rows, sims = index.search(probes)
    recall = float(np.mean(rows == exact))
    same_person = float(np.mean(names[rows] == names[exact]))
    assert recall >= 0.80, recall  # the very template exact search finds
    assert same_person >= 0.97, same_person  # the person it names
    found = rows == exact
    np.testing.assert_allclose(sims[found], exact_sim[found], atol=1e-5)
    assert (sims <= exact_sim + 1e-5).all()  # never better than exact: it searches a subset
    # a probe identical to a template finds that template
    r, s = index.search(templates[[5, 12345]])
    assert r.tolist() == [5, 12345] and np.allclose(s, 1.0, atol=1e-5)


def test_matcher_switches_to_the_index_above_its_threshold_and_agrees():
    names, templates, probes, _ = gallery(1500, 8, seed=1)
    masked = np.tile(np.arange(8) % 2 == 1, 1500)
    exact = EmbeddingMatcher(names, templates, masked, threshold=0.5, masked_threshold=0.5,
                             approximate=False)
    approx = EmbeddingMatcher(names, templates, masked, threshold=0.5, masked_threshold=0.5,
                              approx_min_templates=5000)
    small = EmbeddingMatcher(names, templates, masked, threshold=0.5, masked_threshold=0.5)
    assert APPROX_MIN_TEMPLATES >= 100_000
    assert approx.uses_approximate(masked=True) and approx.uses_approximate(masked=False)
    assert not small.uses_approximate() and not exact.uses_approximate()
    flags = np.arange(len(probes)) % 2 == 1
    a, e = approx.identify(probes, flags), exact.identify(probes, flags)
    agree = np.mean([x[0] == y[0] for x, y in zip(a, e, strict=True)])
    assert agree >= 0.97, agree
    # masked probes only ever match masked templates, as in exact search
    mask_names = set(names[masked])
    assert all(n is None or n in mask_names for n, _ in a)
    probe = templates[np.flatnonzero(masked)[7]]
    [(name, sim)] = approx.identify(probe[None], np.array([True]))
    assert name == names[np.flatnonzero(masked)[7]] and sim == pytest.approx(1.0, abs=1e-5)
    # plain templates only: not itself
    [(name, sim)] = approx.identify(probe[None], np.array([False]))
    assert sim < 0.999
