import numpy as np
import pytest

from maskwatch.recognition import EmbeddingMatcher


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@pytest.fixture
def matcher():
    emb = unit([[1, 0, 0], [0, 1, 0], [0.9, 0.1, 0.4], [0, 0, 1]])
    return EmbeddingMatcher.from_arrays(["ann", "bob", "ann", "cid"], emb,
                                        [False, False, True, False],
                                        threshold=0.8, masked_threshold=0.7)


@pytest.mark.parametrize(
    "probe, masked, expected",
    [
        ([1, 0, 0], False, "ann"),
        ([0, 1, 0.1], False, "bob"),
        ([0.5, 0.5, 0.5], False, None),  # below the unmasked threshold
        ([0.9, 0.1, 0.45], True, "ann"),  # masked probes use masked templates
        ([0, 1, 0], True, None),  # bob has no masked template: the only one is ann's, far away
    ],
)
def test_identify(matcher, probe, masked, expected):
    [(name, sim)] = matcher.identify(unit([probe]), np.array([masked]))
    assert name == expected
    assert -1.0 <= sim <= 1.0


@pytest.mark.parametrize("approximate", [False, None])
def test_masked_probes_against_plain_templates_keep_the_masked_threshold(matcher, approximate):
    # The masked-face student maps a masked face onto the plain templates.
    m = EmbeddingMatcher(matcher.names, matcher.embeddings, matcher.masked, threshold=0.8,
                         masked_threshold=0.7, approximate=approximate)
    probe = unit([[0, 1, 0.1]])
    assert m.identify(probe, np.array([True]))[0][0] is None  # masked templates: only ann's
    [(name, sim)] = m.identify(probe, np.array([True]), masked_templates=False)
    assert name == "bob" and sim == pytest.approx(float(unit([0, 1, 0.1]) @ unit([0, 1, 0])),
                                                  abs=1e-6)
    # ann's masked template is not searched: the plain one (cos 0.74) is the best, and the
    # masked threshold (0.7) names her, where the unmasked one (0.8) would not
    probe = unit([[0.74, 0.0, 0.6726]])
    [(name, sim)] = m.identify(probe, np.array([True]), masked_templates=False)
    assert name == "ann" and sim == pytest.approx(0.74, abs=1e-3)
    assert m.identify(probe, np.array([False]))[0][0] is None


def test_empty_gallery_and_empty_probes():
    m = EmbeddingMatcher.from_arrays([], np.zeros((0, 3), np.float32))
    assert m.identify(unit([[1, 0, 0]]), np.array([False])) == [(None, 0.0)]
    assert m.identify(np.zeros((0, 3), np.float32), np.zeros(0, bool)) == []


def test_mismatched_lengths():
    with pytest.raises(ValueError):
        EmbeddingMatcher(np.array(["a"], dtype=object), np.zeros((2, 3), np.float32),
                         np.zeros(2, bool))


def test_sface_same_person_closer_than_others(datasets):
    from maskwatch.models.detector import YuNetDetector
    from maskwatch.models.embedder import SFaceEmbedder
    from maskwatch.ops.image import read_image

    det, emb = YuNetDetector(), SFaceEmbedder()
    people = sorted((datasets / "lfw-identities" / "images").iterdir())[:4]
    vecs, who = [], []
    for p in people:
        for f in sorted(p.iterdir())[:2]:
            img = read_image(f)
            faces = det.detect(img)
            i = int(np.argmax(faces.widths))
            vecs.append(emb.embed(img, faces[i])[0])
            who.append(p.name)
    v = np.stack(vecs)
    assert v.shape == (8, 128)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sims = v @ v.T
    for i in range(0, 8, 2):
        same = sims[i, i + 1]
        others = [sims[i, j] for j in range(8) if who[j] != who[i]]
        assert same > max(others)
