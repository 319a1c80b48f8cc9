import json
import math

import numpy as np
import pytest

from maskwatch.evaluate import recognition as rec
from maskwatch.evaluate.recognition import (
    evaluate_recognition,
    genuine_impostor,
    open_set_rates,
    person_max,
    rank1_accuracy,
    tar_at_far,
    threshold_at_far,
)
from maskwatch.evaluate.report import json_safe
from maskwatch.recognition import EmbeddingMatcher

IMP4 = [0.1, 0.2, 0.3, 0.4]


@pytest.mark.parametrize(
    "impostor, far, accepted",
    [
        (IMP4, 0.25, 1),  # one of four may pass: only 0.4
        (IMP4, 0.5, 2),
        (IMP4, 0.24, 0),  # floor(0.96) = 0: nothing may pass
        (IMP4, 0.0, 0),
        (IMP4, 1.0, 4),
        ([0.5, 0.5, 0.1, 0.1], 0.25, 0),  # a tie at the boundary is rejected whole
        ([0.5, 0.5, 0.1, 0.1], 0.5, 2),
        (np.linspace(0, 1, 1000), 1e-3, 1),
        (np.linspace(0, 1, 1000), 1e-2, 10),
        (np.linspace(0, 1, 999), 1e-3, 0),
    ],
)
def test_threshold_at_far(impostor, far, accepted):
    thr = threshold_at_far(impostor, far)
    imp = np.asarray(impostor, np.float64)
    assert int((imp >= thr).sum()) == accepted
    assert (imp >= thr).mean() <= far
    if accepted < len(imp):  # the lowest such threshold: the next score down would pass
        below = np.sort(imp)[::-1][accepted]
        assert thr > below and np.nextafter(thr, -math.inf) <= below


@pytest.mark.parametrize("impostor, far", [([], 0.1), (IMP4, -0.1), (IMP4, 1.5)])
def test_threshold_at_far_rejects(impostor, far):
    with pytest.raises(ValueError):
        threshold_at_far(impostor, far)


@pytest.mark.parametrize(
    "genuine, impostor, far, tar, far_actual",
    [
        ([0.9, 0.8, 0.35, 0.2], IMP4, 0.25, 0.75, 0.25),
        ([0.9, 0.8, 0.35, 0.2], IMP4, 0.0, 0.5, 0.0),  # threshold just above 0.4
        ([0.9, 0.8, 0.35, 0.2], IMP4, 1.0, 1.0, 1.0),
        ([0.05], IMP4, 0.5, 0.0, 0.5),
        ([], IMP4, 0.5, 0.0, 0.5),
        # scores on any scale (negative, above 1) work the same way
        ([5.0, 3.0, 2.0], [-1.0, 0.0, 1.0, 2.5, 4.0], 0.2, 2 / 3, 0.2),
    ],
)
def test_tar_at_far(genuine, impostor, far, tar, far_actual):
    r = tar_at_far(genuine, impostor, far)
    assert r["tar"] == pytest.approx(tar)
    assert r["far_actual"] == pytest.approx(far_actual)
    assert r["far"] == far


@pytest.mark.parametrize(
    "scores, labels, expected",
    [
        ([[0.9, 0.1], [0.2, 0.8]], [0, 1], 1.0),
        ([[0.9, 0.1], [0.9, 0.8]], [0, 1], 0.5),
        ([[-np.inf, 0.1], [0.3, -np.inf]], [1, 1], 0.5),  # a person without templates never wins
        (np.zeros((0, 3)), [], 0.0),
    ],
)
def test_rank1_accuracy(scores, labels, expected):
    assert rank1_accuracy(np.asarray(scores, np.float64), labels) == expected


def test_genuine_impostor_drops_people_without_templates():
    g, i = genuine_impostor([[0.9, 0.1, -np.inf], [0.2, 0.8, 0.3]], [0, 1])
    assert g.tolist() == [0.9, 0.8]
    assert sorted(i.tolist()) == [0.1, 0.2, 0.3]


def test_person_max():
    sims = np.array([[0.1, 0.5, 0.3, 0.2], [0.4, -0.2, 0.0, 0.9]])
    out = person_max(sims, [0, 0, 1, 1], 3)
    np.testing.assert_allclose(out[:, :2], [[0.5, 0.3], [0.4, 0.9]])
    assert np.isneginf(out[:, 2]).all()
    # a template left out with -inf does not count
    out = person_max(np.where([True, False, True, True], sims, -np.inf), [0, 0, 1, 1], 2)
    np.testing.assert_allclose(out, [[0.1, 0.3], [0.4, 0.9]])


@pytest.mark.parametrize(
    "threshold, unknown_named, known_correct, known_wrong",
    [
        (0.5, 0.5, 0.5, 0.5),  # the second probe is named, wrongly
        (0.7, 0.0, 0.5, 0.0),
        (0.2, 1.0, 0.5, 0.5),
    ],
)
def test_open_set_rates(threshold, unknown_named, known_correct, known_wrong):
    scores = [[0.9, 0.1], [0.3, 0.6], [0.1, 0.4], [0.55, 0.2]]
    labels = [0, 0, -1, -1]  # second probe: person 0 but person 1 scores higher
    known = [True, True, False, False]
    r = open_set_rates(scores, labels, known, threshold)
    assert ((r["unknown_named"], r["known_correct"], r["known_wrong"])
            == (unknown_named, known_correct, known_wrong))
    assert (r["n_known"], r["n_unknown"]) == (2, 2)


def _random_data(n_people=6, per_person=3, n_probes=10, seed=0):
    rng = np.random.default_rng(seed)

    def unit(x):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    t_emb = unit(rng.normal(size=(n_people * per_person, 16)))
    t_person = np.repeat(np.arange(n_people), per_person)
    t_masked = np.tile([False] + [True] * (per_person - 1), n_people)
    probes = unit(rng.normal(size=(n_probes, 16)))
    p_person = rng.integers(0, n_people, n_probes)
    ok = np.ones(n_probes, bool)
    data = rec._Data(
        people=[f"p{i}" for i in range(n_people)], t_emb=t_emb, t_person=t_person,
        t_masked=t_masked,
        enrol_photos=np.ones(n_people, np.int64), enrol_failures=[], p_person=p_person,
        p_source=[f"x{i}" for i in range(n_probes)],
        p_mask_family={"masked": ["surgical"] * n_probes},
        sets={"unmasked": {"emb": probes, "ok": ok}, "masked": {"emb": probes, "ok": ok}},
    )
    return data, probes


@pytest.mark.parametrize(
    "scheme, probe_set, masked",
    [
        ("mask_aware", "unmasked", False),
        ("mask_aware", "masked", True),
        # plain: every probe against the plain templates, as the engine matches the
        # student's masked faces (the matcher's unmasked path)
        ("plain", "unmasked", False),
        ("plain", "masked", False),
    ],
)
def test_scheme_scores_are_what_the_matcher_uses(scheme, probe_set, masked):
    data, probes = _random_data()
    matcher = EmbeddingMatcher.from_arrays([f"p{i}" for i in data.t_person], data.t_emb,
                                           list(data.t_masked),
                                           threshold=-1.0, masked_threshold=-1.0)
    scores = rec._scores(data, probe_set, scheme)
    got = matcher.identify(probes, np.full(len(probes), masked))
    assert [name for name, _ in got] == [f"p{j}" for j in np.argmax(scores, axis=1)]
    np.testing.assert_allclose([sim for _, sim in got], scores.max(axis=1), atol=1e-5)


def test_summarise_on_random_embeddings_is_complete():
    data, _ = _random_data(n_people=8, n_probes=40)
    res = rec.summarise(data, k=1, synthetic_masks=2, seed=0, probe_face_px=None, open_set=True,
                        calibration_people=0.5, calibration_fpir=0.05)
    assert set(res["closed_set"]["masked"]["plain"]["by_mask"]) == {"surgical"}
    for name in ("unmasked", "masked"):
        assert set(res["closed_set"][name]) == set(rec.SCHEMES)
        assert set(res["open_set"][name]) == set(rec.SCHEMES)
        folds = res["open_set"][name]["mask_aware"]["folds"]
        pooled = res["open_set"][name]["mask_aware"]["pooled"]
        # the two folds evaluate disjoint strangers that together are all of them
        assert sum(f["n_unknown"] for f in folds) == pooled["n_unknown"]
    assert res["schemes"] == ["plain", "mask_aware"]
    assert set(res["recommended_thresholds"]) == {"calibration_fpir", "mask_aware"}
    assert res["recommended_thresholds"]["mask_aware"]["masked_threshold"] is not None
    text = rec.format_recognition(res)
    assert "## Targets" in text and "## Open set" in text
    # the dropped schemes are named once, with where their figures are
    assert "| target | goal | plain | mask_aware |" in text
    assert not any(s in text for s in ("plain_tnorm", "mask_aware_fused", "mask_aware_tnorm"))
    assert "at commit 828732a" in text
    json.dumps(json_safe(res))


@pytest.mark.parametrize("kwargs", [{"k": 0}, {"calibration_people": 1.0},
                                    {"calibration_fpir": 0.0}])
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        evaluate_recognition(tmp_path, tmp_path / "out", **kwargs)


def test_no_people(tmp_path):
    with pytest.raises(ValueError, match="no person folders"):
        evaluate_recognition(tmp_path, tmp_path / "out")


@pytest.mark.slow
def test_small_run_on_lfw(datasets, tmp_path):
    res = evaluate_recognition(
        datasets / "lfw-identities", tmp_path, k=2, limit_people=12, probe_face_px=48,
        mask_templates=datasets / "mask-templates", progress=False,
    )
    on_disk = json.loads((tmp_path / "recognition.json").read_text())
    md = (tmp_path / "recognition.md").read_text()
    assert on_disk["people"] == res["people"] == 12
    assert res["enrolment"]["templates"] == 12 * 2 * 5
    probes = res["probes"]
    assert set(probes) == {"unmasked", "masked", "masked_seen", "unmasked_48px", "masked_48px"}
    for p in probes.values():
        assert p["photos"] == 12 * 8
        assert p["detected"] + p["failed_to_detect"] == p["photos"]
        assert p["failed_to_detect"] <= 5
    assert 40 <= probes["masked_48px"]["face_px_median"] <= 56
    cs = res["closed_set"]
    assert cs["unmasked"]["mask_aware"]["rank1"] >= 0.9
    assert cs["masked"]["mask_aware"]["rank1"] >= 0.85
    assert 0.0 <= cs["masked"]["mask_aware"]["tar"]["1e-3"]["tar"] <= 1.0
    osr = res["open_set"]["masked"]["mask_aware"]
    assert osr["enrolled_people"] == 6 and sum(osr["stranger_people"]) == 6
    thr = res["recommended_thresholds"]["mask_aware"]
    assert 0.2 < thr["threshold"] < 0.8 and 0.2 < thr["masked_threshold"] < 0.8
    assert "## Targets" in md and "masked TAR at FAR 1e-3" in md and "Open set" in md
    assert "configurations" not in res and "## Side by side" not in md  # no student: SFace alone
    assert set(res["mask_families"]["masked"]) == {"n95", "template:KN95"}
    assert set(res["closed_set"]["masked_seen"]) == set(rec.SCHEMES)
