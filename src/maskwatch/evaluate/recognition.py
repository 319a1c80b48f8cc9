"""``maskwatch evaluate`` (recognition): identification and verification under masks.

On an LFW-style folder (``<person>/<images>``, or a folder holding ``images/`` laid
out so), the first ``k`` photos of each person (sorted by name) are enrolled exactly
as ``maskwatch people add`` does (:mod:`maskwatch.enrol`: one plain template and
``synthetic_masks`` synthetic-mask templates per photo), and the remaining photos are
probes, both as they are and wearing a synthetic mask drawn with *other* styles and
another random stream than enrolment (and MaskTheFace templates when given, which
enrolment never uses). A masked probe is detected again after the mask is drawn, as
the live system sees it; faces lost there count as failures to detect.

The embedder (SFace or dlib's ResNet from face_recognition) and the detector under test (YuNet
or dlib's HOG) are chosen per run. YuNet always finds the probe face on
which the mask is drawn (the reference), so every configuration is probed with the
same images; the detector under test must then find that face again (IoU >= 0.3),
unmasked and masked, or the probe counts as a failure to detect.

Matching schemes (each probe gets one score per enrolled person, the best over that
person's templates):

- ``plain``: every probe against the plain templates only (SFace as it is);
- ``mask_aware``: masked probes against the synthetic-mask templates, unmasked probes
  against the plain ones; this is :meth:`EmbeddingMatcher.identify`;
- ``mask_aware_fused``: masked probes scored by the mean of their best plain and best
  synthetic-mask template similarity (unmasked probes as ``mask_aware``);
- ``plain_tnorm``, ``mask_aware_tnorm``: those scores standardised per probe by its
  scores against the *other* enrolled people (cohort / T-norm, see :func:`tnorm`).

Closed-set figures use every person: rank-1 identification accuracy, and
verification TAR at a fixed FAR, where the genuine score of a probe is its score for
its own person and its impostor scores are those for every other person; the FAR
threshold is a quantile of the impostor scores (:func:`threshold_at_far`).

Open set: half of the people (seeded) are enrolled and the others are strangers.
The strangers are split again: the threshold is set on one part (the lowest that
names at most ``calibration_fpir`` of its probes) and then applied, unchanged, to the
other part and to the enrolled people's probes; then the parts swap. So no reported
rate comes from a threshold tuned on the probes it is measured on. The threshold
calibrated on all strangers is the recommended operating point.

Needs no extra beyond the runtime (OpenCV, numpy, tqdm); results are plain JSON.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from maskwatch.evaluate.report import json_safe, pct

log = logging.getLogger(__name__)

#: FARs reported as headline figures.
FARS: tuple[float, ...] = (1e-3, 1e-2)
#: FARs of the printed false-accept / true-accept trade-off.
CURVE_FARS: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
#: Matching schemes, in report order.
SCHEMES: tuple[str, ...] = ("plain", "plain_tnorm", "mask_aware", "mask_aware_fused", "mask_aware_tnorm")
#: The issue's targets (LFW identities, k = 2), shown beside the measured values.
TARGETS: dict[str, float] = {
    "unmasked_rank1": 0.995,
    "masked_rank1": 0.99,
    "masked_tar_far1e-3": 0.97,
    "open_set_unknown_named_max": 0.01,
    "open_set_known_correct_min": 0.95,
    "small_masked_rank1": 0.95,
}
#: A probe's face must overlap the face the mask was drawn on by this IoU to count.
_MIN_IOU = 0.3
#: Fewer cohort people than this make T-norm meaningless: scores are left as they are.
MIN_COHORT = 5


# --------------------------------------------------------------------------- pure metrics


def threshold_at_far(impostor: Any, far: float) -> float:
    """Lowest similarity threshold that accepts at most ``far`` of the impostor scores.

    A score is accepted when ``score >= threshold``. With ``n`` impostor scores at most
    ``floor(far * n)`` are accepted; ties at the boundary are all rejected, so the
    realised FAR never exceeds ``far``.

    Args:
        impostor: (M,) impostor similarity scores (any real scale).
        far: allowed false-accept rate, 0-1.

    Returns:
        The threshold as a float; ``-inf`` when ``far >= 1`` (accept everything).

    Raises:
        ValueError: no impostor scores, or ``far`` outside [0, 1].

    Example:
        >>> threshold_at_far([0.1, 0.2, 0.3, 0.4], 0.25) > 0.3
        True
    """
    s = np.sort(np.asarray(impostor, np.float64).reshape(-1))[::-1]
    if len(s) == 0:
        raise ValueError("threshold_at_far needs at least one impostor score")
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far must be in [0, 1], got {far}")
    k = int(math.floor(far * len(s) + 1e-9))  # false accepts allowed
    if k >= len(s):
        return -math.inf
    return float(np.nextafter(s[k], math.inf))


def tar_at_far(genuine: Any, impostor: Any, far: float) -> dict[str, float]:
    """Verification at a fixed FAR.

    Args:
        genuine: (G,) scores of probes against their own identity.
        impostor: (M,) scores of probes against other identities.
        far: target false-accept rate, 0-1.

    Returns:
        ``{"far": far, "threshold", "tar", "far_actual"}``: the threshold from
        :func:`threshold_at_far`, the fraction of genuine scores at or above it, and
        the fraction of impostor scores at or above it (<= ``far``). ``tar`` is 0.0
        without genuine scores.
    """
    g = np.asarray(genuine, np.float64).reshape(-1)
    imp = np.asarray(impostor, np.float64).reshape(-1)
    thr = threshold_at_far(imp, far)
    return {
        "far": float(far),
        "threshold": thr,
        "tar": float(np.mean(g >= thr)) if len(g) else 0.0,
        "far_actual": float(np.mean(imp >= thr)),
    }


def rank1_accuracy(scores: Any, labels: Any) -> float:
    """Fraction of probes whose best-scoring person is their own.

    Args:
        scores: (N, P) probe-by-person scores (``-inf`` for a person without templates).
        labels: (N,) the probes' person indices into the columns.

    Returns:
        Accuracy 0-1; 0.0 for no probes.
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, np.int64).reshape(-1)
    if len(y) == 0:
        return 0.0
    return float(np.mean(np.argmax(s, axis=1) == y))


def genuine_impostor(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Split a probe-by-person score matrix into genuine and impostor scores.

    Args:
        scores: (N, P) scores; non-finite entries (people without templates) are dropped.
        labels: (N,) each probe's person index.

    Returns:
        ``(genuine (N,), impostor (<= N * (P - 1),))`` as float64.
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, np.int64).reshape(-1)
    own = np.zeros(s.shape, bool)
    own[np.arange(len(y)), y] = True
    genuine = s[own]
    impostor = s[~own]
    return genuine, impostor[np.isfinite(impostor)]


def person_max(sims: Any, template_person: Any, n_people: int) -> np.ndarray:
    """Best similarity per person: (N, T) probe-template scores -> (N, P).

    Args:
        sims: (N, T) similarities; set a column to ``-inf`` to leave a template out.
        template_person: (T,) person index of each template, in ``[0, n_people)``.
        n_people: number of people P.

    Returns:
        (N, P) float64, ``-inf`` for a person with no (selected) template.
    """
    s = np.asarray(sims, np.float64)
    tp = np.asarray(template_person, np.int64).reshape(-1)
    out = np.full((s.shape[0], n_people), -np.inf)
    for p in np.unique(tp):
        out[:, p] = s[:, tp == p].max(axis=1)
    return out


def tnorm(scores: Any, min_cohort: int = MIN_COHORT) -> np.ndarray:
    """Cohort (T-norm) score normalisation, leave-one-out.

    Each probe's score for person ``p`` is standardised by the mean and standard
    deviation of the same probe's scores for the *other* people:
    ``z_p = (s_p - mean_{q != p} s_q) / std_{q != p} s_q``. A probe that resembles
    everybody (a hard, masked or blurred face) gets its scores lowered, one that
    stands out from the crowd raised, so one threshold fits easy and hard probes.

    Args:
        scores: (N, P) similarities; ``-inf`` entries (no templates) are ignored and
            stay ``-inf``.
        min_cohort: with fewer other people than this the scores are returned as
            they are (the statistics would be meaningless).

    Returns:
        (N, P) float64 normalised scores (units: cohort standard deviations).
    """
    s = np.asarray(scores, np.float64)
    valid = np.isfinite(s)
    n_valid = valid.sum(axis=1, keepdims=True)
    if s.size == 0 or int(n_valid.min()) - 1 < min_cohort:
        return s.copy()
    v = np.where(valid, s, 0.0)
    tot, tot2 = v.sum(axis=1, keepdims=True), (v * v).sum(axis=1, keepdims=True)
    m = n_valid - 1
    mean = (tot - v) / m
    var = np.maximum((tot2 - v * v) / m - mean * mean, 1e-12)
    z = (v - mean) / np.sqrt(var)
    return np.where(valid, z, -np.inf)


def open_set_rates(scores: Any, labels: Any, known: Any, threshold: float) -> dict[str, Any]:
    """Open-set identification at one threshold.

    Args:
        scores: (N, P) probe-by-enrolled-person scores.
        labels: (N,) column of each known probe's person (ignored for unknown ones).
        known: (N,) bool, True for probes of enrolled people.
        threshold: a probe is given the best person's name when that score >= it.

    Returns:
        ``{"threshold", "unknown_named" (FPIR: strangers given a name),
        "known_correct" (DIR: enrolled people given their own name),
        "known_wrong" (enrolled people given another's name), "n_unknown", "n_known"}``.
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels, np.int64).reshape(-1)
    kn = np.asarray(known, bool).reshape(-1)
    best = s.max(axis=1) if s.shape[1] else np.full(len(s), -np.inf)
    who = np.argmax(s, axis=1) if s.shape[1] else np.zeros(len(s), np.int64)
    named = best >= threshold
    unk = ~kn
    return {
        "threshold": float(threshold),
        "unknown_named": float(named[unk].mean()) if unk.any() else 0.0,
        "known_correct": float((named & (who == y))[kn].mean()) if kn.any() else 0.0,
        "known_wrong": float((named & (who != y))[kn].mean()) if kn.any() else 0.0,
        "n_unknown": int(unk.sum()),
        "n_known": int(kn.sum()),
    }


# --------------------------------------------------------------------------- embeddings


@dataclass
class _Data:
    """Embeddings of one run: enrolment templates and probe sets."""

    people: list[str]
    t_emb: np.ndarray  # (T, D) templates
    t_person: np.ndarray  # (T,) person index
    t_masked: np.ndarray  # (T,) bool
    enrol_photos: np.ndarray  # (P,) photos that gave templates
    enrol_failures: list[str]
    # per probe photo (N,)
    p_person: np.ndarray
    p_source: list[str]
    p_mask_shape: list[str]
    sets: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # name -> {"emb", "ok"}
    face_px: dict[str, list[float]] = field(default_factory=dict)
    embedder: dict[str, str] = field(default_factory=lambda: {"name": "sface-2021dec-int8", "version": "1",
                                                                "key": "sface"})
    detector: str = "yunet"
    timing_ms: dict[str, float | None] = field(default_factory=dict)


def person_folders(root: str | Path) -> list[Path]:
    """Person folders of an LFW-style dataset, sorted: ``root/<person>/`` or
    ``root/images/<person>/``. Raises ValueError when there are none."""
    base = Path(root)
    if not base.is_dir():
        raise ValueError(f"{base}: no such folder")
    if (base / "images").is_dir():
        base = base / "images"
    people = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not people:
        raise ValueError(f"{base}: no person folders (expected <person>/<images>)")
    return people


def _central_face(faces: Any, shape: tuple[int, ...]) -> Any:
    """The face nearest the image centre (LFW photos are centred on their subject)."""
    if len(faces) == 0:
        return None
    h, w = shape[:2]
    cx = (faces.boxes[:, 0] + faces.boxes[:, 2]) / 2 - w / 2
    cy = (faces.boxes[:, 1] + faces.boxes[:, 3]) / 2 - h / 2
    return faces[int(np.argmin(cx * cx + cy * cy))]


def _same_face(faces: Any, box: np.ndarray) -> Any:
    """The detection that overlaps ``box`` most (IoU >= 0.3), or None."""
    from maskwatch.ops.boxes import iou_matrix

    if len(faces) == 0:
        return None
    iou = iou_matrix(np.asarray(box, np.float32).reshape(1, 4), faces.boxes)[0]
    j = int(np.argmax(iou))
    return faces[j] if iou[j] >= _MIN_IOU else None


def _extract(
    people: Sequence[Path],
    *,
    k: int,
    synthetic_masks: int,
    seed: int,
    probe_face_px: int | None,
    templates: Any,
    progress: bool,
    embedder: str | Any = "sface",
    detector: str = "yunet",
) -> _Data:
    """Detect, mask and embed every enrolment photo and probe of ``people``.

    ``embedder`` is a name for :func:`~maskwatch.models.embedder.create_embedder`, or
    any object with ``embed(image, faces) -> (N, dim)``, ``dim``, ``name`` and
    ``version``.
    """
    from tqdm import tqdm

    from maskwatch.enrol import mask_styles
    from maskwatch.models.detector import YuNetDetector, create_detector
    from maskwatch.models.embedder import create_embedder
    from maskwatch.ops.image import ImageError, list_images, read_image
    from maskwatch.ops.synthmask import random_mask_style, render_mask

    # YuNet is the reference: it places the probes' masks, so every detector and
    # embedder sees the same probe images; `det` is the detector under test.
    ref = YuNetDetector()
    det = ref if detector == "yunet" else create_detector(detector)
    emb = create_embedder(embedder) if isinstance(embedder, str) else embedder
    dim = emb.dim
    detect_s: list[float] = []
    embed_s: list[float] = []
    t_emb: list[np.ndarray] = []
    t_person: list[int] = []
    t_masked: list[bool] = []
    enrol_ok = np.zeros(len(people), np.int64)
    enrol_fail: list[str] = []
    p_person: list[int] = []
    p_source: list[str] = []
    p_shape: list[str] = []
    names = ["unmasked", "masked"]
    if probe_face_px:
        names += [f"unmasked_{probe_face_px}px", f"masked_{probe_face_px}px"]
    vecs: dict[str, list[np.ndarray | None]] = {n: [] for n in names}
    face_px: dict[str, list[float]] = {n: [] for n in names}

    def embed(image: np.ndarray, face: Any) -> np.ndarray:
        t = time.perf_counter()
        out = emb.embed(image, face)[0]
        embed_s.append(time.perf_counter() - t)
        return out

    def detect(image: np.ndarray) -> Any:
        t = time.perf_counter()
        out = det.detect(image)
        detect_s.append(time.perf_counter() - t)
        return out

    for pi, folder in enumerate(tqdm(people, desc="recognition", unit="person", disable=not progress)):
        photos = list_images(folder)
        # enrolment exactly as maskwatch.enrol.enrol_photos(rng_seed=seed)
        rng = np.random.default_rng(seed)
        for photo in photos[:k]:
            try:
                image = read_image(photo)
            except ImageError as exc:
                enrol_fail.append(f"{photo}: {exc}")
                continue
            face = _central_face(detect(image), image.shape)
            if face is None:
                enrol_fail.append(f"{photo}: no face found")
                continue
            enrol_ok[pi] += 1
            t_emb.append(embed(image, face))
            t_person.append(pi)
            t_masked.append(False)
            for style in mask_styles(synthetic_masks, rng):
                masked = render_mask(image, face.landmarks[0], face.boxes[0], position="proper",
                                     style=style, rng=rng)
                t_emb.append(embed(masked, face))
                t_person.append(pi)
                t_masked.append(True)
        # probes: another random stream, realistic random styles (and templates)
        for j, photo in enumerate(photos[k:]):
            prng = np.random.default_rng([seed, 104729, pi, j])
            p_person.append(pi)
            p_source.append(str(photo))
            got: dict[str, tuple[np.ndarray, float] | None] = dict.fromkeys(names)
            style = random_mask_style(prng, templates)
            p_shape.append(style.shape)
            try:
                image = read_image(photo)
            except ImageError:
                image = None
            ref_face = _central_face(ref.detect(image), image.shape) if image is not None else None
            if ref_face is not None:
                box = ref_face.boxes[0]
                face = ref_face if det is ref else _same_face(detect(image), box)
                if face is not None:
                    got["unmasked"] = (embed(image, face), float(face.widths[0]))
                masked = render_mask(image, ref_face.landmarks[0], box, position="proper", style=style,
                                     rng=prng, templates=templates)
                mface = _same_face(detect(masked), box)
                if mface is not None:
                    got["masked"] = (embed(masked, mface), float(mface.widths[0]))
                if probe_face_px:
                    scale = min(1.0, probe_face_px / max(float(ref_face.widths[0]), 1.0))
                    for name, img in ((names[2], image), (names[3], masked)):
                        small = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                        sface = _same_face(detect(small), box * scale)
                        if sface is not None:
                            got[name] = (embed(small, sface), float(sface.widths[0]))
            for name in names:
                vecs[name].append(got[name][0] if got[name] is not None else None)
                if got[name] is not None:
                    face_px[name].append(got[name][1])

    sets = {}
    for name in names:
        ok = np.array([v is not None for v in vecs[name]], bool)
        arr = np.zeros((len(ok), dim), np.float32)
        for i, v in enumerate(vecs[name]):
            if v is not None:
                arr[i] = v
        sets[name] = {"emb": arr, "ok": ok}
    return _Data(
        people=[p.name for p in people],
        t_emb=np.array(t_emb, np.float32).reshape(-1, dim),
        t_person=np.array(t_person, np.int64),
        t_masked=np.array(t_masked, bool),
        enrol_photos=enrol_ok,
        enrol_failures=enrol_fail,
        p_person=np.array(p_person, np.int64),
        p_source=p_source,
        p_mask_shape=p_shape,
        sets=sets,
        face_px=face_px,
        embedder={"name": emb.name, "version": str(emb.version),
                  "key": embedder if isinstance(embedder, str) else emb.name},
        detector=detector,
        timing_ms={
            "detect_median": round(1000 * float(np.median(detect_s)), 2) if detect_s else None,
            "embed_per_face_median": round(1000 * float(np.median(embed_s)), 2) if embed_s else None,
        },
    )


# --------------------------------------------------------------------------- protocols


def _is_masked_set(name: str) -> bool:
    return name.startswith("masked")


def _scores(data: _Data, name: str, scheme: str, columns: np.ndarray | None = None) -> np.ndarray:
    """(N_detected, P') scheme scores of probe set ``name``; ``columns`` picks the gallery."""
    s = data.sets[name]
    emb = s["emb"][s["ok"]]
    sims = emb @ data.t_emb.T
    n = len(data.people)
    plain = ~data.t_masked if (~data.t_masked).any() else np.ones(len(data.t_masked), bool)
    if scheme.startswith("mask_aware") and _is_masked_set(name) and data.t_masked.any():
        scores = person_max(np.where(data.t_masked[None], sims, -np.inf), data.t_person, n)
        if scheme == "mask_aware_fused":
            scores = 0.5 * (scores + person_max(np.where(plain[None], sims, -np.inf), data.t_person, n))
    else:
        scores = person_max(np.where(plain[None], sims, -np.inf), data.t_person, n)
    if columns is not None:
        scores = scores[:, columns]
    if scheme.endswith("tnorm"):
        scores = tnorm(scores)
    return scores


def _far_key(far: float) -> str:
    return f"{far:.0e}".replace("e-0", "e-")


def _closed_set(data: _Data, name: str, scheme: str) -> dict[str, Any]:
    s = data.sets[name]
    y = data.p_person[s["ok"]]
    n_all = len(s["ok"])
    scores = _scores(data, name, scheme)
    g, imp = genuine_impostor(scores, y)
    right = np.argmax(scores, axis=1) == y if len(y) else np.zeros(0, bool)
    out: dict[str, Any] = {
        "probes": int(len(y)),
        "rank1": rank1_accuracy(scores, y),
        "rank1_with_ftd": float(right.sum() / n_all) if n_all else 0.0,
        "tar": {},
        "curve": [],
    }
    if len(imp) == 0:
        return out
    for far in FARS:
        out["tar"][_far_key(far)] = tar_at_far(g, imp, far)
    out["curve"] = [tar_at_far(g, imp, far) for far in CURVE_FARS]
    shapes = np.array(data.p_mask_shape, dtype=object)[s["ok"]]
    if _is_masked_set(name):
        thr = out["tar"][_far_key(1e-3)]["threshold"]
        kinds = {"template": shapes == "template", "procedural": shapes != "template"}
        out["by_mask"] = {
            kind: {
                "probes": int(sel.sum()),
                "rank1": float(right[sel].mean()) if sel.any() else None,
                "tar_far1e-3": float((g[sel] >= thr).mean()) if sel.any() else None,
            }
            for kind, sel in kinds.items()
        }
    return out


def _open_set_split(n_people: int, seed: int, calibration_people: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """(enrolled people, [stranger part A, stranger part B]) for the open-set protocol."""
    perm = np.random.default_rng([seed, 7]).permutation(n_people)
    enrolled = np.sort(perm[: n_people // 2])
    strangers = perm[n_people // 2 :]
    n_cal = int(round(len(strangers) * calibration_people))
    n_cal = min(max(n_cal, 1), len(strangers) - 1)
    return enrolled, [np.sort(strangers[:n_cal]), np.sort(strangers[n_cal:])]


def _calibrate(stranger_best: np.ndarray, fpir: float) -> float:
    """Lowest threshold naming at most ``fpir`` of the strangers (inf: none to calibrate on)."""
    return threshold_at_far(stranger_best, fpir) if len(stranger_best) else math.inf


def open_set_folds(
    scores: np.ndarray, person: np.ndarray, n_people: int, enrolled: np.ndarray, parts: list[np.ndarray],
    calibration_fpir: float,
) -> tuple[list[dict[str, Any]], dict[str, Any], np.ndarray, np.ndarray]:
    """The two calibration folds of the open-set protocol, and their pooled rates.

    Args:
        scores: (N, len(enrolled)) scores of the detected probes against the enrolled people.
        person: (N,) person index of each probe.
        n_people: people in the run.
        enrolled, parts: from :func:`_open_set_split`.
        calibration_fpir: share of strangers a calibrated threshold may name.

    Returns:
        ``(folds, pooled, labels, known)``: per fold the rates with the threshold
        calibrated on one half of the strangers and applied to the other; the pooled
        rates; each probe's column in ``scores`` (-1 for strangers); and the known mask.
    """
    col_of = np.full(n_people, -1, np.int64)
    col_of[enrolled] = np.arange(len(enrolled))
    labels = col_of[person]
    known = labels >= 0
    best = scores.max(axis=1)
    folds = []
    for cal, held in ((parts[0], parts[1]), (parts[1], parts[0])):
        cal_probe = np.isin(person, cal)
        thr = _calibrate(best[cal_probe], calibration_fpir)
        use = known | np.isin(person, held)
        rates = open_set_rates(scores[use], labels[use], known[use], thr)
        rates["calibration_probes"] = int(cal_probe.sum())
        folds.append(rates)
    n_unk = sum(f["n_unknown"] for f in folds)
    pooled = {
        "unknown_named": float(sum(f["unknown_named"] * f["n_unknown"] for f in folds) / max(n_unk, 1)),
        "known_correct": float(np.mean([f["known_correct"] for f in folds])),
        "known_wrong": float(np.mean([f["known_wrong"] for f in folds])),
        "n_unknown": int(n_unk),
        "n_known": folds[0]["n_known"],
    }
    return folds, pooled, labels, known


def _open_set(
    data: _Data, name: str, scheme: str, *, seed: int, calibration_people: float, calibration_fpir: float
) -> dict[str, Any]:
    n_people = len(data.people)
    enrolled, parts = _open_set_split(n_people, seed, calibration_people)
    s = data.sets[name]
    person = data.p_person[s["ok"]]
    scores = _scores(data, name, scheme, columns=enrolled)
    folds, pooled, labels, known = open_set_folds(scores, person, n_people, enrolled, parts, calibration_fpir)
    best = scores.max(axis=1)
    strangers = ~known
    rec_thr = _calibrate(best[strangers], calibration_fpir)
    recommended = open_set_rates(scores, labels, known, rec_thr)
    tradeoff = []
    for fpir in (0.002, 0.005, 0.01, 0.02, 0.05, 0.1):
        t = _calibrate(best[strangers], fpir)
        r = open_set_rates(scores, labels, known, t)
        tradeoff.append({"fpir_target": fpir, **r})
    return {
        "enrolled_people": int(len(enrolled)),
        "stranger_people": [int(len(p)) for p in parts],
        "folds": folds,
        "pooled": pooled,
        "recommended": recommended,
        "tradeoff": tradeoff,
    }


def evaluate_recognition(
    root: str | Path,
    out_dir: str | Path,
    *,
    k: int = 2,
    synthetic_masks: int = 4,
    seed: int = 0,
    probe_face_px: int | None = None,
    open_set: bool = True,
    calibration_people: float = 0.5,
    calibration_fpir: float = 0.005,
    mask_templates: str | Path | None = None,
    progress: bool = True,
    limit_people: int = 0,
    embedder: str = "sface",
    detector: str = "yunet",
) -> dict[str, Any]:
    """Evaluate recognition with and without masks on an LFW-style folder.

    Writes ``recognition.json`` and ``recognition.md`` into ``out_dir``.

    Args:
        root: ``<person>/<images>`` folder (or one holding ``images/`` so laid out).
            People with fewer than ``k + 1`` photos are skipped.
        out_dir: report folder (created).
        k: photos enrolled per person (the first ``k`` by file name); the rest probe.
        synthetic_masks: synthetic-mask templates per enrolment photo, as
            ``maskwatch people add`` makes them (0: plain templates only).
        seed: seed of the enrolment masks (``enrol_photos(rng_seed=seed)``), of the
            probe masks (another stream) and of the open-set split.
        probe_face_px: also probe with photos shrunk so that the face box is about
            this many pixels wide (e.g. 48; never enlarged); None: full size only.
        open_set: run the open-set protocol (half the people not enrolled).
        calibration_people: share of the strangers whose probes set the threshold in
            the first fold (the rest are evaluated; the second fold swaps them).
        calibration_fpir: share of strangers' probes allowed a name on the
            calibration part; below the 1% target to leave room for sampling error.
        mask_templates: MaskTheFace-style folder; about a third of probe masks then
            use its templates (enrolment never does, as at run time).
        progress: show a progress bar.
        limit_people: use only the first this many people (0: all).
        embedder: ``"sface"`` or ``"dlib"`` (:func:`~maskwatch.models.embedder.create_embedder`).
        detector: the detector under test, one that gives landmarks: ``"yunet"`` or
            ``"hog"`` (dlib's HOG). It finds the enrolment faces and the
            probes' faces; YuNet still places the probes' synthetic masks, so every
            configuration is probed with the same images.

    Returns:
        The results dict written to ``recognition.json`` (see ``recognition.md`` for a
        reading guide): ``closed_set[set][scheme]`` with ``rank1`` and ``tar``,
        ``open_set[set][scheme]`` with ``folds``, ``pooled`` and ``recommended``,
        ``recommended_thresholds`` and ``targets``.

    Raises:
        ValueError: no usable person folders, ``k < 1`` or bad fractions, a detector
            without landmarks.
    """
    if detector not in ("yunet", "hog"):
        raise ValueError(f"recognition needs a detector that gives five landmarks (yunet or hog), not {detector!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not 0.0 < calibration_people < 1.0:
        raise ValueError(f"calibration_people must be between 0 and 1, got {calibration_people}")
    if not 0.0 < calibration_fpir < 1.0:
        raise ValueError(f"calibration_fpir must be between 0 and 1, got {calibration_fpir}")
    from maskwatch.ops.image import list_images

    templates = None
    if mask_templates is not None:
        from maskwatch.ops.synthmask import MaskTemplates

        templates = MaskTemplates.from_folder(mask_templates)
    people = [p for p in person_folders(root) if len(list_images(p)) > k]
    if limit_people > 0:
        people = people[:limit_people]
    if len(people) < 2:
        raise ValueError(f"{root}: need at least 2 people with more than {k} photos each")
    t0 = time.perf_counter()
    data = _extract(people, k=k, synthetic_masks=synthetic_masks, seed=seed, probe_face_px=probe_face_px,
                    templates=templates, progress=progress, embedder=embedder, detector=detector)
    results = summarise(
        data, k=k, synthetic_masks=synthetic_masks, seed=seed, probe_face_px=probe_face_px,
        open_set=open_set, calibration_people=calibration_people, calibration_fpir=calibration_fpir,
    )
    results["dataset"] = str(root)
    results["mask_templates"] = str(mask_templates) if mask_templates is not None else None
    results["seconds"] = round(time.perf_counter() - t0, 1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recognition.json").write_text(json.dumps(json_safe(results), indent=2))
    (out / "recognition.md").write_text(format_recognition(results))
    for line in summary_lines(results):
        log.info("%s", line)
    return results


def summarise(
    data: _Data,
    *,
    k: int,
    synthetic_masks: int,
    seed: int,
    probe_face_px: int | None,
    open_set: bool,
    calibration_people: float,
    calibration_fpir: float,
) -> dict[str, Any]:
    """All figures of a run from its embeddings (the part of the evaluation after SFace)."""
    results: dict[str, Any] = {
        "people": len(data.people),
        "k": k,
        "synthetic_masks": synthetic_masks,
        "seed": seed,
        "probe_face_px": probe_face_px,
        "calibration_people": calibration_people,
        "calibration_fpir": calibration_fpir,
        "schemes": list(SCHEMES),
        "embedder": dict(data.embedder),
        "detector": data.detector,
        "timing_ms": dict(data.timing_ms),
        "enrolment": {
            "photos": int(data.enrol_photos.sum()),
            "people_without_templates": int((data.enrol_photos == 0).sum()),
            "templates": int(len(data.t_emb)),
            "synthetic_templates": int(data.t_masked.sum()),
            "failures": data.enrol_failures,
        },
        "probes": {},
        "closed_set": {},
        "open_set": {},
    }
    for name, s in data.sets.items():
        px = data.face_px.get(name) or []
        results["probes"][name] = {
            "photos": int(len(s["ok"])),
            "detected": int(s["ok"].sum()),
            "failed_to_detect": int((~s["ok"]).sum()),
            "face_px_median": float(np.median(px)) if px else None,
        }
        results["closed_set"][name] = {sch: _closed_set(data, name, sch) for sch in SCHEMES}
        if open_set and len(data.people) >= 4:
            results["open_set"][name] = {
                sch: _open_set(data, name, sch, seed=seed, calibration_people=calibration_people,
                               calibration_fpir=calibration_fpir)
                for sch in SCHEMES
            }
    results["recommended_thresholds"] = _recommended(results)
    results["targets"] = _targets(results)
    return results


def _ceil3(x: float) -> float:
    return math.ceil(x * 1000 - 1e-9) / 1000 if math.isfinite(x) else x


def _recommended(results: dict[str, Any]) -> dict[str, Any]:
    """Operating thresholds calibrated on all strangers (rounded up to 0.001)."""
    osr = results["open_set"]
    if "unmasked" not in osr or "masked" not in osr:
        return {}
    out: dict[str, Any] = {"calibration_fpir": results["calibration_fpir"]}
    for scheme in ("mask_aware", "mask_aware_fused", "mask_aware_tnorm"):
        u, m = osr["unmasked"][scheme]["recommended"], osr["masked"][scheme]["recommended"]
        out[scheme] = {
            "threshold": _ceil3(u["threshold"]),
            "masked_threshold": _ceil3(m["threshold"]),
            "unmasked_known_correct": u["known_correct"],
            "masked_known_correct": m["known_correct"],
        }
    return out


def _targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    cs, osr = results["closed_set"], results["open_set"]
    small = f"masked_{results['probe_face_px']}px" if results["probe_face_px"] else None
    rows: list[tuple[str, str, float, str, Any]] = [
        ("unmasked rank-1", ">=", TARGETS["unmasked_rank1"], "unmasked", lambda r: r["rank1"]),
        ("masked rank-1", ">=", TARGETS["masked_rank1"], "masked", lambda r: r["rank1"]),
        ("masked TAR at FAR 1e-3", ">=", TARGETS["masked_tar_far1e-3"], "masked",
         lambda r: r["tar"].get("1e-3", {}).get("tar")),
    ]
    out = []
    for label, op, target, name, get in rows:
        measured = {sch: get(cs[name][sch]) for sch in SCHEMES} if name in cs else {}
        out.append({"target": label, "op": op, "value": target, "measured": measured})
    if "masked" in osr:
        out.append({"target": "open set: unknown masked probes named", "op": "<=",
                    "value": TARGETS["open_set_unknown_named_max"],
                    "measured": {sch: osr["masked"][sch]["pooled"]["unknown_named"] for sch in SCHEMES}})
        out.append({"target": "open set: known masked probes named right", "op": ">=",
                    "value": TARGETS["open_set_known_correct_min"],
                    "measured": {sch: osr["masked"][sch]["pooled"]["known_correct"] for sch in SCHEMES}})
    if small and small in cs:
        out.append({"target": f"small faces ({results['probe_face_px']} px): masked rank-1", "op": ">=",
                    "value": TARGETS["small_masked_rank1"],
                    "measured": {sch: cs[small][sch]["rank1"] for sch in SCHEMES}})
    for row in out:
        row["met"] = {sch: _meets(v, row["op"], row["value"]) for sch, v in row["measured"].items()}
    return out


def _meets(v: float | None, op: str, target: float) -> bool:
    if v is None:
        return False
    return v >= target if op == ">=" else v <= target


# --------------------------------------------------------------------------- report


def _num(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def summary_lines(results: dict[str, Any]) -> list[str]:
    """A few lines for the console: targets and the recommended thresholds."""
    lines = []
    for row in results["targets"]:
        vals = ", ".join(f"{sch} {pct(v)}" for sch, v in row["measured"].items())
        lines.append(f"{row['target']} (target {row['op']} {pct(row['value'])}): {vals}")
    rec = results.get("recommended_thresholds") or {}
    for scheme in ("mask_aware", "mask_aware_fused", "mask_aware_tnorm"):
        if scheme in rec:
            r = rec[scheme]
            lines.append(f"operating point ({scheme}, strangers named <= {pct(rec['calibration_fpir'])}): "
                         f"threshold {r['threshold']}, masked_threshold {r['masked_threshold']}")
    return lines


def _emb_label(results: dict[str, Any]) -> str:
    e = results.get("embedder") or {"name": "sface-2021dec-int8", "version": "1"}
    return f"{e['name']} v{e['version']}"


def format_recognition(results: dict[str, Any]) -> str:
    """``recognition.md``: targets, closed-set and open-set tables, trade-offs."""
    px = results["probe_face_px"]
    out = [
        "# Recognition under masks",
        "",
        f"Embedder `{_emb_label(results)}`, detector `{results.get('detector', 'yunet')}`. "
        f"Dataset `{results.get('dataset', '?')}`: {results['people']} people, the first {results['k']} photos "
        f"of each enrolled with {results['synthetic_masks']} synthetic-mask templates per photo "
        f"({results['enrolment']['templates']} templates), the other photos probe, as they are and wearing a "
        "synthetic mask (other styles and random stream than enrolment"
        + (", a third from MaskTheFace templates" if results.get("mask_templates") else "")
        + "), detected again after masking."
        + (f" Small-face probes are shrunk so that the face is about {px} px wide." if px else ""),
        "",
        "Schemes: `plain` = probes against plain templates; `plain_tnorm` = the same with cohort "
        "(T-norm) score normalisation; `mask_aware` = masked probes against masked templates, unmasked "
        "against plain (`EmbeddingMatcher.identify`); `mask_aware_fused` = masked probes scored by the mean of "
        "their best plain and best masked template similarity; `mask_aware_tnorm` = `mask_aware`, T-normalised "
        "(scores in cohort standard deviations, not cosine).",
        "",
        "## Targets",
        "",
    ]
    rows = []
    for row in results["targets"]:
        rows.append([row["target"], f"{row['op']} {pct(row['value'])}"]
                    + [pct(row["measured"].get(sch), 2) + (" ✓" if row["met"].get(sch) else " ✗")
                       for sch in SCHEMES])
    out += _table(["target", "goal"] + list(SCHEMES), rows)

    rec = results.get("recommended_thresholds") or {}
    if rec:
        out += ["## Recommended operating thresholds", "",
                f"Calibrated on all strangers' probes of the open-set protocol (at most "
                f"{pct(rec['calibration_fpir'])} of them named, gallery of "
                f"{next(iter(results['open_set']['masked'].values()))['enrolled_people']} people; a smaller "
                "gallery names fewer strangers at the same threshold), rounded up to 0.001. "
                "`threshold` / `masked_threshold` are the `EmbeddingMatcher` arguments.", ""]
        trows = []
        for scheme in ("mask_aware", "mask_aware_fused", "mask_aware_tnorm"):
            r = rec[scheme]
            trows.append([scheme, _num(r["threshold"]), _num(r["masked_threshold"]), pct(r["unmasked_known_correct"]),
                          pct(r["masked_known_correct"])])
        out += _table(["scheme", "threshold (unmasked)", "masked_threshold", "known named right, unmasked",
                       "known named right, masked"], trows)

    out += ["## Probes", ""]
    out += _table(["probe set", "photos", "detected", "failed to detect", "median face px"],
                  [[n, p["photos"], p["detected"], p["failed_to_detect"],
                    "n/a" if p["face_px_median"] is None else f"{p['face_px_median']:.0f}"]
                   for n, p in results["probes"].items()])
    if results["enrolment"]["failures"]:
        out += ["Enrolment photos refused: " + "; ".join(results["enrolment"]["failures"]), ""]

    out += ["## Closed set (everybody enrolled)", "",
            "Rank-1 among detected probes (with FTD: failures to detect counted as errors). TAR at a FAR: "
            "genuine = a probe's score for its own person, impostors = its scores for everybody else.", ""]
    rows = []
    for name, per in results["closed_set"].items():
        for sch, r in per.items():
            t3, t2 = r["tar"].get("1e-3", {}), r["tar"].get("1e-2", {})
            rows.append([name, sch, r["probes"], pct(r["rank1"], 2), pct(r["rank1_with_ftd"], 2),
                         pct(t3.get("tar"), 2), _num(t3.get("threshold")), pct(t2.get("tar"), 2),
                         _num(t2.get("threshold"))])
    out += _table(["probes", "scheme", "n", "rank-1", "rank-1 with FTD", "TAR @ FAR 1e-3", "threshold",
                   "TAR @ FAR 1e-2", "threshold"], rows)
    if "masked" in results["closed_set"]:
        rows = []
        for sch, r in results["closed_set"]["masked"].items():
            for kind, b in r.get("by_mask", {}).items():
                rows.append([sch, kind, b["probes"], pct(b["rank1"], 2), pct(b["tar_far1e-3"], 2)])
        out += ["Masked probes by mask kind (procedural masks are drawn by the same renderer as the "
                "enrolment templates; MaskTheFace templates are not):", ""]
        out += _table(["scheme", "mask", "n", "rank-1", "TAR @ FAR 1e-3"], rows)

    out += ["### False-accept / true-accept trade-off", ""]
    for name, per in results["closed_set"].items():
        rows = []
        for sch, r in per.items():
            rows.append([sch] + [f"{pct(c['tar'], 2)} ({_num(c['threshold'])})" for c in r["curve"]])
        out += [f"`{name}` probes: TAR (threshold) at each FAR", ""]
        out += _table(["scheme"] + [f"FAR {f:g}" for f in CURVE_FARS], rows)

    if results["open_set"]:
        first = next(iter(next(iter(results["open_set"].values())).values()))
        out += ["## Open set (half of the people not enrolled)", "",
                f"{first['enrolled_people']} people enrolled, {sum(first['stranger_people'])} strangers split "
                f"{first['stranger_people'][0]} / {first['stranger_people'][1]}. In each fold the threshold is the "
                f"lowest that names at most {pct(results['calibration_fpir'])} of one part's probes, and is then "
                "applied to the other part (unknown named) and to the enrolled people's probes (known named "
                "right); the parts then swap. 'pooled' sums both folds; nothing is tuned on what it measures.", ""]
        rows = []
        for name, per in results["open_set"].items():
            for sch, r in per.items():
                f1, f2, p = r["folds"][0], r["folds"][1], r["pooled"]
                rows.append([name, sch, f"{_num(f1['threshold'])} / {_num(f2['threshold'])}",
                             f"{pct(f1['unknown_named'])} / {pct(f2['unknown_named'])}",
                             pct(p["unknown_named"], 2), pct(p["known_correct"], 2), pct(p["known_wrong"], 2)])
        out += _table(["probes", "scheme", "threshold (fold 1 / 2)", "unknown named (fold 1 / 2)",
                       "unknown named, pooled", "known named right", "known named wrong"], rows)
        out += ["### Open-set trade-off", "",
                "Threshold set on all strangers at each rate of strangers named, and the share of enrolled "
                "people's probes then named right.", ""]
        rows = []
        for name, per in results["open_set"].items():
            for sch, r in per.items():
                rows.append([name, sch] + [f"{pct(t['known_correct'])} ({_num(t['threshold'])})"
                                           for t in r["tradeoff"]])
        fp = [t["fpir_target"] for t in first["tradeoff"]]
        out += _table(["probes", "scheme"] + [f"{pct(f)} named" for f in fp], rows)
    tm = results.get("timing_ms") or {}
    if tm.get("detect_median") is not None:
        out.append(f"Median time per detection {tm['detect_median']:.1f} ms, per face embedding "
                   f"{tm['embed_per_face_median']:.1f} ms.")
    out.append(f"Run time: {results.get('seconds', 'n/a')} s.")
    return "\n".join(out) + "\n"
