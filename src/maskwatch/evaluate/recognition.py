"""``maskwatch evaluate`` (recognition): identification and verification under masks.

On an LFW-style folder (``<person>/<images>``, or a folder holding ``images/`` laid
out so), the first ``k`` photos of each person (sorted by name) are enrolled exactly
as ``maskwatch people add`` does (:mod:`maskwatch.enrol`: one plain template and
``synthetic_masks`` synthetic-mask templates per photo), and the remaining photos are
probes, as they are and wearing synthetic masks drawn with other random streams than
enrolment: the ``masked`` set with the held-out mask families of
:mod:`maskwatch.ops.synthmask` (procedural N95, and MaskTheFace's KN95 template when
templates are given), which no training step uses, so that a trained embedder is
measured on masks it never saw; the ``masked_seen`` set, on the same photos, with the
training families. A masked probe is detected again after the mask is drawn, as the
live system sees it; faces lost there count as failures to detect.

The embedder (SFace or dlib's ResNet from face_recognition) and the detector under test (YuNet
or dlib's HOG) are chosen per run. YuNet always finds the probe face on
which the mask is drawn (the reference), so every configuration is probed with the
same images; the detector under test must then find that face again (IoU >= 0.3),
unmasked and masked, or the probe counts as a failure to detect.

A *student* embedder (an ``.onnx`` file with SFace's interface whose embeddings live
in SFace's space, see :mod:`maskwatch.models.embedder`) is evaluated beside SFace in the
same run: every aligned crop is embedded by both, and the configurations of
:data:`CONFIGURATIONS` (SFace alone; the student for masked probes against SFace
templates; the student for everything) are reported side by side.

Matching schemes, the two the engine uses (each probe gets one score per enrolled
person, the best over that person's templates):

- ``plain``: every probe against the plain templates only (SFace as it is; with the
  student for masked faces, the engine's default);
- ``mask_aware``: masked probes against the synthetic-mask templates, unmasked probes
  against the plain ones; this is :meth:`EmbeddingMatcher.identify` (the engine with
  ``--masked-faces sface``).

Cohort score normalisation (T-norm) and the fusion of plain and synthetic-mask template
scores were measured too and dropped, as the engine uses neither; their figures are in
docs/results/recognition.md at commit 828732a.

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
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from maskwatch.evaluate.report import json_safe, pct
from maskwatch.ops.boxes import best_overlap, nearest_to_centre

log = logging.getLogger(__name__)

#: FARs reported as headline figures.
FARS: tuple[float, ...] = (1e-3, 1e-2)
#: FARs of the printed false-accept / true-accept trade-off.
CURVE_FARS: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
#: Matching schemes, in report order.
SCHEMES: tuple[str, ...] = ("plain", "mask_aware")
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
class _StudentEmbeddings:
    """The student embedder's embeddings of the same aligned crops as :class:`_Data`'s."""

    t_emb: np.ndarray  # (T, D) templates, row for row as _Data.t_emb
    sets: dict[str, np.ndarray]  # probe set -> (N, D), row for row as _Data.sets[name]["emb"]
    embedder: dict[str, str]  # name, version, space, path


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
    # mask style family of each probe photo per drawn mask set ("masked", "masked_seen"):
    # a procedural shape ("n95") or "template:<family>" (see _mask_family)
    p_mask_family: dict[str, list[str]] = field(default_factory=dict)
    sets: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # name -> {"emb", "ok"}
    face_px: dict[str, list[float]] = field(default_factory=dict)
    embedder: dict[str, str] = field(default_factory=lambda: {"name": "sface-2021dec-int8",
                                                                "version": "1", "key": "sface"})
    detector: str = "yunet"
    timing_ms: dict[str, Any] = field(default_factory=dict)
    student: _StudentEmbeddings | None = None


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
    i = nearest_to_centre(faces.boxes, shape)
    return None if i is None else faces[i]


def _same_face(faces: Any, box: np.ndarray) -> Any:
    """The detection that overlaps ``box`` most (IoU >= 0.3), or None."""
    j = best_overlap(faces.boxes, box, _MIN_IOU)
    return None if j is None else faces[j]


def _mask_family(style: Any, templates: Any) -> str:
    """The family a drawn mask style belongs to: its procedural shape (``"n95"``), or
    ``"template:<family>"`` for a MaskTheFace template (``"template:KN95"``)."""
    if style.shape == "template":
        return f"template:{templates[style.template_index].family}"
    return str(style.shape)


def _median_ms(seconds: Sequence[float]) -> float | None:
    return round(1000 * float(np.median(seconds)), 2) if len(seconds) else None


def check_student(student: Any, baseline_name: str = "sface-2021dec-int8") -> None:
    """Raise ValueError unless ``student`` can stand beside the baseline embedder called
    ``baseline_name``: it embeds aligned crops and its embeddings are in that space."""
    if not hasattr(student, "embed_aligned"):
        raise ValueError(f"{student.name}: a student embeds SFace's aligned crops "
                         "(an SFace-like .onnx file)")
    space = getattr(student, "space", student.name)
    if space != baseline_name:
        label = getattr(student, "model_path", student.name)
        raise ValueError(f"{label}: its embeddings are comparable with {space!r} templates, "
                         f"not with {baseline_name!r} ones")


def _load_student(student: Any, baseline: Any) -> Any:
    """The student embedder (an ``.onnx`` path or an embedder object), checked against
    the baseline, which must align faces itself (SFace)."""
    from maskwatch.models.embedder import SFaceEmbedder

    if not hasattr(baseline, "align"):
        raise ValueError("a student embedder is compared with SFace: use embedder 'sface'")
    stu = SFaceEmbedder(model_path=student) if isinstance(student, (str, Path)) else student
    check_student(stu, baseline.name)
    return stu


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
    student: str | Path | Any | None = None,
) -> _Data:
    """Detect, mask and embed every enrolment photo and probe of ``people``.

    ``embedder`` is a name for :func:`~maskwatch.models.embedder.create_embedder`, or
    any object with ``embed(image, faces) -> (N, dim)``, ``dim``, ``name`` and
    ``version``. ``student`` (an ``.onnx`` path or an :class:`SFaceEmbedder`) embeds
    the very crops that SFace (``embedder``) aligned, each once; its embeddings go to
    :attr:`_Data.student`.

    Each probe photo is masked twice, on the same detected face: ``masked`` with a
    held-out mask family (:func:`~maskwatch.ops.synthmask.held_out_mask_style`: no
    training step draws it), ``masked_seen`` with a training family
    (:func:`~maskwatch.ops.synthmask.training_mask_style`), from separate random
    streams. The small-face sets shrink the unmasked and the held-out masked photo.
    """
    from tqdm import tqdm

    from maskwatch.enrol import mask_styles
    from maskwatch.models.detector import YuNetDetector, create_detector
    from maskwatch.models.embedder import create_embedder
    from maskwatch.ops.image import ImageError, list_images, read_image
    from maskwatch.ops.synthmask import held_out_mask_style, render_mask, training_mask_style

    # YuNet is the reference: it places the probes' masks, so every detector and
    # embedder sees the same probe images; `det` is the detector under test.
    ref = YuNetDetector()
    det = ref if detector == "yunet" else create_detector(detector)
    emb = create_embedder(embedder) if isinstance(embedder, str) else embedder
    stu = _load_student(student, emb) if student is not None else None
    # SFace-like embedders align once and embed the crop (timed apart); others embed whole.
    aligns = hasattr(emb, "align") and hasattr(emb, "embed_aligned")
    dim = emb.dim
    detect_s: list[float] = []
    align_s: list[float] = []
    embed_s: list[float] = []  # per face, alignment included
    embed_only_s: list[float] = []  # per face, the embedder's own run on the aligned crop
    student_only_s: list[float] = []
    t_emb: list[np.ndarray] = []
    t_student: list[np.ndarray] = []
    t_person: list[int] = []
    t_masked: list[bool] = []
    enrol_ok = np.zeros(len(people), np.int64)
    enrol_fail: list[str] = []
    p_person: list[int] = []
    p_source: list[str] = []
    families: dict[str, list[str]] = {"masked": [], "masked_seen": []}
    names = ["unmasked", "masked", "masked_seen"]
    if probe_face_px:
        names += [f"unmasked_{probe_face_px}px", f"masked_{probe_face_px}px"]
    Vec = tuple[np.ndarray, np.ndarray | None]  # (embedding, the student's or None)
    vecs: dict[str, list[Vec | None]] = {n: [] for n in names}
    face_px: dict[str, list[float]] = {n: [] for n in names}

    def embed(image: np.ndarray, face: Any) -> Vec:
        t0 = time.perf_counter()
        if not aligns:
            out = emb.embed(image, face)[0]
            embed_s.append(time.perf_counter() - t0)
            return out, None
        crop = emb.align(image, face)
        t1 = time.perf_counter()
        out = emb.embed_aligned(crop)[0]
        t2 = time.perf_counter()
        align_s.append(t1 - t0)
        embed_only_s.append(t2 - t1)
        embed_s.append(t2 - t0)
        if stu is None:
            return out, None
        other = stu.embed_aligned(crop)[0]  # the same crop: alignment is not repeated
        student_only_s.append(time.perf_counter() - t2)
        return out, other

    def detect(image: np.ndarray) -> Any:
        t = time.perf_counter()
        out = det.detect(image)
        detect_s.append(time.perf_counter() - t)
        return out

    def template(vec: Vec, pi: int, masked: bool) -> None:
        t_emb.append(vec[0])
        if vec[1] is not None:
            t_student.append(vec[1])
        t_person.append(pi)
        t_masked.append(masked)

    for pi, folder in enumerate(tqdm(people, desc="recognition", unit="person",
                                     disable=not progress)):
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
            template(embed(image, face), pi, False)
            for style in mask_styles(synthetic_masks, rng):
                masked = render_mask(image, face.landmarks[0], face.boxes[0], position="proper",
                                     style=style, rng=rng)
                template(embed(masked, face), pi, True)
        # probes: other random streams than enrolment, one per mask set
        for j, photo in enumerate(photos[k:]):
            prng = np.random.default_rng([seed, 104729, pi, j])  # held-out masks
            srng = np.random.default_rng([seed, 130363, pi, j])  # training ("seen") masks
            p_person.append(pi)
            p_source.append(str(photo))
            got: dict[str, tuple[Vec, float] | None] = dict.fromkeys(names)
            styles = {"masked": held_out_mask_style(prng, templates),
                      "masked_seen": training_mask_style(srng, templates)}
            for set_name, style in styles.items():
                families[set_name].append(_mask_family(style, templates))
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
                masked_images = {}
                for set_name, style in styles.items():
                    mrng = prng if set_name == "masked" else srng
                    masked = render_mask(image, ref_face.landmarks[0], box, position="proper",
                                         style=style, rng=mrng, templates=templates)
                    masked_images[set_name] = masked
                    mface = _same_face(detect(masked), box)
                    if mface is not None:
                        got[set_name] = (embed(masked, mface), float(mface.widths[0]))
                if probe_face_px:
                    scale = min(1.0, probe_face_px / max(float(ref_face.widths[0]), 1.0))
                    for name, img in ((names[3], image), (names[4], masked_images["masked"])):
                        small = cv2.resize(img, None, fx=scale, fy=scale,
                                           interpolation=cv2.INTER_AREA)
                        sface = _same_face(detect(small), box * scale)
                        if sface is not None:
                            got[name] = (embed(small, sface), float(sface.widths[0]))
            for name in names:
                entry = got[name]
                vecs[name].append(entry[0] if entry is not None else None)
                if entry is not None:
                    face_px[name].append(entry[1])

    def stack(rows: Sequence[Vec | None], which: int) -> tuple[np.ndarray, np.ndarray]:
        ok = np.array([v is not None for v in rows], bool)
        arr = np.zeros((len(ok), dim), np.float32)
        for i, v in enumerate(rows):
            if v is not None:
                arr[i] = v[which]
        return arr, ok

    sets = {}
    for name in names:
        arr, ok = stack(vecs[name], 0)
        sets[name] = {"emb": arr, "ok": ok}
    student_data = None
    if stu is not None:
        student_data = _StudentEmbeddings(
            t_emb=np.array(t_student, np.float32).reshape(-1, dim),
            sets={name: stack(vecs[name], 1)[0] for name in names},
            embedder={"name": stu.name, "version": str(stu.version),
                      "space": getattr(stu, "space", stu.name),
                      "path": str(getattr(stu, "model_path", ""))},
        )
    timing: dict[str, Any] = {
        "detect_median": _median_ms(detect_s),
        "embed_per_face_median": _median_ms(embed_s),
        "align_median": _median_ms(align_s),
    }
    if aligns:
        timing["embed_only_median"] = {"sface": _median_ms(embed_only_s)}
        if stu is not None:
            timing["embed_only_median"]["student"] = _median_ms(student_only_s)
    return _Data(
        people=[p.name for p in people],
        t_emb=np.array(t_emb, np.float32).reshape(-1, dim),
        t_person=np.array(t_person, np.int64),
        t_masked=np.array(t_masked, bool),
        enrol_photos=enrol_ok,
        enrol_failures=enrol_fail,
        p_person=np.array(p_person, np.int64),
        p_source=p_source,
        p_mask_family=families,
        sets=sets,
        face_px=face_px,
        embedder={"name": emb.name, "version": str(emb.version),
                  "key": embedder if isinstance(embedder, str) else emb.name},
        detector=detector,
        timing_ms=timing,
        student=student_data,
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
    if scheme == "mask_aware" and _is_masked_set(name) and data.t_masked.any():
        scores = person_max(np.where(data.t_masked[None], sims, -np.inf), data.t_person, n)
    else:
        scores = person_max(np.where(plain[None], sims, -np.inf), data.t_person, n)
    return scores if columns is None else scores[:, columns]


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
    families = _set_families(data, name)
    if families is not None:
        fam = np.array(families, dtype=object)[s["ok"]]
        thr = out["tar"][_far_key(1e-3)]["threshold"]
        out["by_mask"] = {}
        for kind in sorted(set(fam)):
            sel = fam == kind
            out["by_mask"][kind] = {"probes": int(sel.sum()), "rank1": float(right[sel].mean()),
                                    "tar_far1e-3": float((g[sel] >= thr).mean())}
    return out


def _set_families(data: _Data, name: str) -> list[str] | None:
    """Mask family of each probe photo of masked set ``name`` (None: unmasked or unknown).

    The small-face masked set shrinks the held-out ``masked`` photos, so shares their masks.
    """
    if not _is_masked_set(name):
        return None
    families = data.p_mask_family.get("masked_seen" if name == "masked_seen" else "masked")
    if families is None or len(families) != len(data.sets[name]["ok"]):
        return None
    return families


def _open_set_split(n_people: int, seed: int,
                    calibration_people: float) -> tuple[np.ndarray, list[np.ndarray]]:
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
    scores: np.ndarray, person: np.ndarray, n_people: int, enrolled: np.ndarray,
    parts: list[np.ndarray], calibration_fpir: float,
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
        "unknown_named": float(sum(f["unknown_named"] * f["n_unknown"] for f in folds)
                               / max(n_unk, 1)),
        "known_correct": float(np.mean([f["known_correct"] for f in folds])),
        "known_wrong": float(np.mean([f["known_wrong"] for f in folds])),
        "n_unknown": int(n_unk),
        "n_known": folds[0]["n_known"],
    }
    return folds, pooled, labels, known


def _open_set(
    data: _Data, name: str, scheme: str, *, seed: int, calibration_people: float,
    calibration_fpir: float
) -> dict[str, Any]:
    n_people = len(data.people)
    enrolled, parts = _open_set_split(n_people, seed, calibration_people)
    s = data.sets[name]
    person = data.p_person[s["ok"]]
    scores = _scores(data, name, scheme, columns=enrolled)
    folds, pooled, labels, known = open_set_folds(scores, person, n_people, enrolled, parts,
                                                  calibration_fpir)
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
    student: str | Path | Any | None = None,
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
            probe masks (other streams) and of the open-set split.
        probe_face_px: also probe with photos shrunk so that the face box is about
            this many pixels wide (e.g. 48; never enlarged); None: full size only.
        open_set: run the open-set protocol (half the people not enrolled).
        calibration_people: share of the strangers whose probes set the threshold in
            the first fold (the rest are evaluated; the second fold swaps them).
        calibration_fpir: share of strangers' probes allowed a name on the
            calibration part; below the 1% target to leave room for sampling error.
        mask_templates: MaskTheFace-style folder; about a third of probe masks then
            use its templates (the held-out ``masked`` set its KN95 family, the
            ``masked_seen`` set the others; enrolment never does, as at run time).
            Without it the held-out masks are procedural N95 only.
        progress: show a progress bar.
        limit_people: use only the first this many people (0: all).
        embedder: ``"sface"`` or ``"dlib"`` (:func:`~maskwatch.models.embedder.create_embedder`).
        detector: the detector under test, one that gives landmarks: ``"yunet"`` or
            ``"hog"`` (dlib's HOG). It finds the enrolment faces and the
            probes' faces; YuNet still places the probes' synthetic masks, so every
            configuration is probed with the same images.
        student: a student embedder (``.onnx`` path or a loaded
            :class:`~maskwatch.models.embedder.SFaceEmbedder`) whose embeddings are
            comparable with SFace's: it embeds the same aligned crops as SFace, and the
            report compares the configurations of :data:`CONFIGURATIONS` side by side.
            Needs ``embedder="sface"``.

    Returns:
        The results dict written to ``recognition.json`` (see ``recognition.md`` for a
        reading guide): ``closed_set[set][scheme]`` with ``rank1`` and ``tar``,
        ``open_set[set][scheme]`` with ``folds``, ``pooled`` and ``recommended``,
        ``recommended_thresholds`` and ``targets`` (all for ``embedder`` alone), and with
        a student ``configurations[name]`` holding the same keys for the schemes of
        :data:`CONFIGURATION_SCHEMES`.

    Raises:
        ValueError: no usable person folders, ``k < 1`` or bad fractions, a detector
            without landmarks, a student that is not comparable with SFace.
    """
    if detector not in ("yunet", "hog"):
        raise ValueError("recognition needs a detector that gives five landmarks (yunet or hog), "
                         f"not {detector!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not 0.0 < calibration_people < 1.0:
        raise ValueError(f"calibration_people must be between 0 and 1, got {calibration_people}")
    if not 0.0 < calibration_fpir < 1.0:
        raise ValueError(f"calibration_fpir must be between 0 and 1, got {calibration_fpir}")
    if student is not None and embedder != "sface":
        raise ValueError(f"a student embedder is compared with SFace, not with {embedder!r}")
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
    data = _extract(people, k=k, synthetic_masks=synthetic_masks, seed=seed,
                    probe_face_px=probe_face_px, templates=templates, progress=progress,
                    embedder=embedder, detector=detector, student=student)
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


#: Side-by-side configurations of a run with a student embedder: which embedder makes
#: the gallery templates, embeds the unmasked probes and the masked probes (every
#: masked set). ``student_masked`` is the run-time mode "student for masked faces only,
#: against SFace templates".
CONFIGURATIONS: dict[str, dict[str, str]] = {
    "sface": {"templates": "sface", "unmasked": "sface", "masked": "sface"},
    "student_masked": {"templates": "sface", "unmasked": "sface", "masked": "student"},
    "student": {"templates": "student", "unmasked": "student", "masked": "student"},
}
#: Schemes reported for each configuration (today every scheme of :data:`SCHEMES`).
CONFIGURATION_SCHEMES: tuple[str, ...] = ("plain", "mask_aware")


def configuration_data(data: _Data, name: str) -> _Data:
    """``data`` as configuration ``name`` of :data:`CONFIGURATIONS` sees it: templates
    and probe embeddings taken from SFace or the student, detections unchanged."""
    spec = CONFIGURATIONS[name]
    if "student" in spec.values() and data.student is None:
        raise ValueError(f"configuration {name!r} needs the student's embeddings")
    stu = data.student

    def pick(who: str, sface: np.ndarray, student: np.ndarray | None) -> np.ndarray:
        return student if who == "student" and student is not None else sface

    sets = {}
    for set_name, s in data.sets.items():
        who = spec["masked" if _is_masked_set(set_name) else "unmasked"]
        emb = pick(who, s["emb"], stu.sets[set_name] if stu else None)
        sets[set_name] = {"emb": emb, "ok": s["ok"]}
    t_emb = pick(spec["templates"], data.t_emb, stu.t_emb if stu else None)
    return replace(data, t_emb=t_emb, sets=sets)


def _figures(
    data: _Data,
    schemes: Sequence[str],
    *,
    seed: int,
    probe_face_px: int | None,
    open_set: bool,
    calibration_people: float,
    calibration_fpir: float,
) -> dict[str, Any]:
    """Closed-set and open-set figures, thresholds and targets of ``schemes``."""
    out: dict[str, Any] = {"closed_set": {}, "open_set": {}}
    for name in data.sets:
        out["closed_set"][name] = {sch: _closed_set(data, name, sch) for sch in schemes}
        if open_set and len(data.people) >= 4:
            out["open_set"][name] = {
                sch: _open_set(data, name, sch, seed=seed, calibration_people=calibration_people,
                               calibration_fpir=calibration_fpir)
                for sch in schemes
            }
    out["recommended_thresholds"] = _recommended(out, calibration_fpir)
    out["targets"] = _targets(out, probe_face_px, schemes)
    return out


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
    """All figures of a run from its embeddings (the part of the evaluation after SFace).

    The top level holds the schemes of :data:`SCHEMES` for the baseline embedder alone;
    with a student, ``configurations`` holds :data:`CONFIGURATIONS` for
    :data:`CONFIGURATION_SCHEMES`.
    """
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
        "mask_families": {name: dict(sorted(Counter(f).items()))
                          for name, f in data.p_mask_family.items()},
    }
    for name, s in data.sets.items():
        px = data.face_px.get(name) or []
        results["probes"][name] = {
            "photos": int(len(s["ok"])),
            "detected": int(s["ok"].sum()),
            "failed_to_detect": int((~s["ok"]).sum()),
            "face_px_median": float(np.median(px)) if px else None,
        }
    opts: dict[str, Any] = {
        "seed": seed, "probe_face_px": probe_face_px, "open_set": open_set,
        "calibration_people": calibration_people, "calibration_fpir": calibration_fpir,
    }
    results.update(_figures(data, SCHEMES, **opts))
    if data.student is not None:
        results["student"] = dict(data.student.embedder)
        results["configuration_schemes"] = list(CONFIGURATION_SCHEMES)
        results["configurations"] = {
            name: {"embedders": dict(spec),
                   **_figures(configuration_data(data, name), CONFIGURATION_SCHEMES, **opts)}
            for name, spec in CONFIGURATIONS.items()
        }
    return results


def _ceil3(x: float) -> float:
    return math.ceil(x * 1000 - 1e-9) / 1000 if math.isfinite(x) else x


def _recommended(figures: dict[str, Any], calibration_fpir: float) -> dict[str, Any]:
    """Operating thresholds calibrated on all strangers (rounded up to 0.001)."""
    osr = figures["open_set"]
    if "unmasked" not in osr or "masked" not in osr:
        return {}
    out: dict[str, Any] = {"calibration_fpir": calibration_fpir}
    if "mask_aware" in osr["masked"]:
        u = osr["unmasked"]["mask_aware"]["recommended"]
        m = osr["masked"]["mask_aware"]["recommended"]
        out["mask_aware"] = {
            "threshold": _ceil3(u["threshold"]),
            "masked_threshold": _ceil3(m["threshold"]),
            "unmasked_known_correct": u["known_correct"],
            "masked_known_correct": m["known_correct"],
        }
    return out


def _targets(
    figures: dict[str, Any], probe_face_px: int | None, schemes: Sequence[str]
) -> list[dict[str, Any]]:
    cs, osr = figures["closed_set"], figures["open_set"]
    small = f"masked_{probe_face_px}px" if probe_face_px else None
    rows: list[tuple[str, str, float, str, Any]] = [
        ("unmasked rank-1", ">=", TARGETS["unmasked_rank1"], "unmasked", lambda r: r["rank1"]),
        ("masked rank-1", ">=", TARGETS["masked_rank1"], "masked", lambda r: r["rank1"]),
        ("masked TAR at FAR 1e-3", ">=", TARGETS["masked_tar_far1e-3"], "masked",
         lambda r: r["tar"].get("1e-3", {}).get("tar")),
    ]
    out = []
    for label, op, target, name, get in rows:
        measured = {sch: get(cs[name][sch]) for sch in schemes} if name in cs else {}
        out.append({"target": label, "op": op, "value": target, "measured": measured})
    if "masked" in osr:
        out.append({"target": "open set: unknown masked probes named", "op": "<=",
                    "value": TARGETS["open_set_unknown_named_max"],
                    "measured": {sch: osr["masked"][sch]["pooled"]["unknown_named"]
                                 for sch in schemes}})
        out.append({"target": "open set: known masked probes named right", "op": ">=",
                    "value": TARGETS["open_set_known_correct_min"],
                    "measured": {sch: osr["masked"][sch]["pooled"]["known_correct"]
                                 for sch in schemes}})
    if small and small in cs:
        out.append({"target": f"small faces ({probe_face_px} px): masked rank-1", "op": ">=",
                    "value": TARGETS["small_masked_rank1"],
                    "measured": {sch: cs[small][sch]["rank1"] for sch in schemes}})
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
    """A few lines for the console: targets and the recommended thresholds (with a
    student: each target for every configuration, and the time per face)."""
    if results.get("configurations"):
        return _configuration_summary(results)
    lines = []
    for row in results["targets"]:
        vals = ", ".join(f"{sch} {pct(v)}" for sch, v in row["measured"].items())
        lines.append(f"{row['target']} (target {row['op']} {pct(row['value'])}): {vals}")
    rec = results.get("recommended_thresholds") or {}
    for scheme in SCHEMES:
        if scheme in rec:
            r = rec[scheme]
            lines.append(f"operating point ({scheme}, strangers named <= "
                         f"{pct(rec['calibration_fpir'])}): "
                         f"threshold {r['threshold']}, masked_threshold {r['masked_threshold']}")
    return lines


def _configuration_summary(results: dict[str, Any]) -> list[str]:
    configs = results["configurations"]
    schemes = results["configuration_schemes"]
    first = next(iter(configs.values()))
    lines = []
    for i, row in enumerate(first["targets"]):
        vals = ", ".join(
            f"{cfg} " + " / ".join(pct(c["targets"][i]["measured"].get(sch)) for sch in schemes)
            for cfg, c in configs.items())
        lines.append(f"{row['target']} (target {row['op']} {pct(row['value'])}): {vals} "
                     f"({' / '.join(schemes)})")
    for cfg, c in configs.items():
        r = (c.get("recommended_thresholds") or {}).get("mask_aware")
        if r:
            lines.append(f"operating point {cfg} (mask_aware): threshold {r['threshold']}, "
                         f"masked_threshold {r['masked_threshold']}")
    ms = (results.get("timing_ms") or {}).get("embed_only_median") or {}
    if ms:
        lines.append("ms per face (aligned crop to embedding): "
                     + ", ".join(f"{who} {_ms(v)}" for who, v in ms.items()))
    return lines


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


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
        f"Dataset `{results.get('dataset', '?')}`: {results['people']} people, "
        f"the first {results['k']} photos of each enrolled with {results['synthetic_masks']} "
        "synthetic-mask templates per photo "
        f"({results['enrolment']['templates']} templates), the other photos probe, as they are and "
        "wearing synthetic masks drawn with other random streams than enrolment, detected again "
        "after masking: `masked` with the held-out mask families (that no training step uses), "
        "`masked_seen` with the training families, both on the same photos (see Probe masks)."
        + (f" Small-face probes are shrunk so that the face is about {px} px wide (the masked ones "
           "wear the held-out masks)." if px else ""),
        "",
    ]
    if results.get("configurations"):
        out += _side_by_side(results)
    out += _mask_families_section(results)
    if results.get("configurations"):
        out += ["## SFace alone, in detail", "",
                f"The sections below are `{_emb_label(results)}` alone (configuration `sface`): "
                "targets, thresholds, closed and open set for every probe set.", ""]
    out += [
        "Schemes: `plain` = probes against plain templates; `mask_aware` = masked probes against "
        "masked templates, unmasked against plain (`EmbeddingMatcher.identify`). Cohort score "
        "normalisation (T-norm) and the fusion of plain and masked template scores were measured "
        "and dropped, as the engine uses neither: see docs/results/recognition.md at commit "
        "828732a.",
        "",
        "## Targets",
        "",
    ]
    rows = []
    for row in results["targets"]:
        measured = [pct(row["measured"].get(sch), 2) + (" ✓" if row["met"].get(sch) else " ✗")
                    for sch in SCHEMES]
        rows.append([row["target"], f"{row['op']} {pct(row['value'])}"] + measured)
    out += _table(["target", "goal"] + list(SCHEMES), rows)

    rec = results.get("recommended_thresholds") or {}
    if rec:
        out += ["## Recommended operating thresholds", "",
                f"Calibrated on all strangers' probes of the open-set protocol (at most "
                f"{pct(rec['calibration_fpir'])} of them named, gallery of "
                f"{next(iter(results['open_set']['masked'].values()))['enrolled_people']} people; "
                "a smaller gallery names fewer strangers at the same threshold), rounded up to "
                "0.001. "
                "`threshold` / `masked_threshold` are the `EmbeddingMatcher` arguments.", ""]
        trows = []
        for scheme in (s for s in SCHEMES if s in rec):
            r = rec[scheme]
            trows.append([scheme, _num(r["threshold"]), _num(r["masked_threshold"]),
                          pct(r["unmasked_known_correct"]), pct(r["masked_known_correct"])])
        out += _table(["scheme", "threshold (unmasked)", "masked_threshold",
                       "known named right, unmasked", "known named right, masked"], trows)

    out += ["## Probes", ""]
    out += _table(["probe set", "photos", "detected", "failed to detect", "median face px"],
                  [[n, p["photos"], p["detected"], p["failed_to_detect"],
                    "n/a" if p["face_px_median"] is None else f"{p['face_px_median']:.0f}"]
                   for n, p in results["probes"].items()])
    if results["enrolment"]["failures"]:
        out += ["Enrolment photos refused: " + "; ".join(results["enrolment"]["failures"]), ""]

    out += ["## Closed set (everybody enrolled)", "",
            "Rank-1 among detected probes (with FTD: failures to detect counted as errors). "
            "TAR at a FAR: genuine = a probe's score for its own person, impostors = its scores "
            "for everybody else.", ""]
    rows = []
    for name, per in results["closed_set"].items():
        for sch, r in per.items():
            t3, t2 = r["tar"].get("1e-3", {}), r["tar"].get("1e-2", {})
            rows.append([name, sch, r["probes"], pct(r["rank1"], 2), pct(r["rank1_with_ftd"], 2),
                         pct(t3.get("tar"), 2), _num(t3.get("threshold")), pct(t2.get("tar"), 2),
                         _num(t2.get("threshold"))])
    out += _table(["probes", "scheme", "n", "rank-1", "rank-1 with FTD", "TAR @ FAR 1e-3",
                   "threshold", "TAR @ FAR 1e-2", "threshold"], rows)
    rows = []
    for name in ("masked", "masked_seen"):
        for sch in CONFIGURATION_SCHEMES:
            r = results["closed_set"].get(name, {}).get(sch, {})
            for kind, b in r.get("by_mask", {}).items():
                rows.append([name, sch, f"`{kind}`", b["probes"], pct(b["rank1"], 2),
                             pct(b["tar_far1e-3"], 2)])
    if rows:
        out += ["Masked probes by mask family, schemes `plain` and `mask_aware` (procedural masks "
                "are drawn by the same renderer as the enrolment templates; MaskTheFace templates, "
                "`template:...`, are not; TAR at the set's FAR 1e-3 threshold):", ""]
        out += _table(["probes", "scheme", "mask", "n", "rank-1", "TAR @ FAR 1e-3"], rows)

    out += ["### False-accept / true-accept trade-off", ""]
    for name, per in results["closed_set"].items():
        rows = []
        for sch, r in per.items():
            rows.append([sch] + [f"{pct(c['tar'], 2)} ({_num(c['threshold'])})"
                                 for c in r["curve"]])
        out += [f"`{name}` probes: TAR (threshold) at each FAR", ""]
        out += _table(["scheme"] + [f"FAR {f:g}" for f in CURVE_FARS], rows)

    if results["open_set"]:
        first = next(iter(next(iter(results["open_set"].values())).values()))
        out += ["## Open set (half of the people not enrolled)", "",
                f"{first['enrolled_people']} people enrolled, {sum(first['stranger_people'])} "
                f"strangers split {first['stranger_people'][0]} / {first['stranger_people'][1]}. "
                "In each fold the threshold is the lowest that names at most "
                f"{pct(results['calibration_fpir'])} of one part's probes, and is then "
                "applied to the other part (unknown named) and to the enrolled people's probes "
                "(known named right); the parts then swap. 'pooled' sums both folds; nothing is "
                "tuned on what it measures.", ""]
        rows = []
        for name, per in results["open_set"].items():
            for sch, r in per.items():
                f1, f2, p = r["folds"][0], r["folds"][1], r["pooled"]
                rows.append([name, sch, f"{_num(f1['threshold'])} / {_num(f2['threshold'])}",
                             f"{pct(f1['unknown_named'])} / {pct(f2['unknown_named'])}",
                             pct(p["unknown_named"], 2), pct(p["known_correct"], 2),
                             pct(p["known_wrong"], 2)])
        out += _table(["probes", "scheme", "threshold (fold 1 / 2)", "unknown named (fold 1 / 2)",
                       "unknown named, pooled", "known named right", "known named wrong"], rows)
        out += ["### Open-set trade-off", "",
                "Threshold set on all strangers at each rate of strangers named, and the share of "
                "enrolled people's probes then named right.", ""]
        rows = []
        for name, per in results["open_set"].items():
            for sch, r in per.items():
                rows.append([name, sch] + [f"{pct(t['known_correct'])} ({_num(t['threshold'])})"
                                           for t in r["tradeoff"]])
        fp = [t["fpir_target"] for t in first["tradeoff"]]
        out += _table(["probes", "scheme"] + [f"{pct(f)} named" for f in fp], rows)
    out += _timing_lines(results)
    out.append(f"Run time: {results.get('seconds', 'n/a')} s.")
    return "\n".join(out) + "\n"


def _timing_lines(results: dict[str, Any]) -> list[str]:
    tm = results.get("timing_ms") or {}
    if tm.get("detect_median") is None:
        return []
    line = (f"Median time per detection {_ms(tm['detect_median'])} ms, per face embedding "
            f"{_ms(tm['embed_per_face_median'])} ms")
    if tm.get("align_median") is not None:
        line += f" (alignment {_ms(tm['align_median'])} ms"
        ms = tm.get("embed_only_median") or {}
        line += "".join(f", {who} {_ms(v)} ms" for who, v in ms.items()) + ")"
    return [line + "."]


def _family_label(family: str) -> str:
    return f"{family.split(':', 1)[1]} (MaskTheFace template)" if family.startswith("template:") \
        else f"procedural {family}"


def _mask_families_section(results: dict[str, Any]) -> list[str]:
    fam = results.get("mask_families") or {}
    if not fam:
        return []
    out = ["## Probe masks", ""]
    rows = [[f"`{name}`", ", ".join(f"{_family_label(f)} {n}" for f, n in counts.items())]
            for name, counts in fam.items()]
    out += _table(["probe set", "mask families drawn (photos)"], rows)
    out += ["`masked` draws only the held-out families (`HELD_OUT_TEMPLATE_FAMILIES`, "
            "`HELD_OUT_SHAPES` of `maskwatch.ops.synthmask`), `masked_seen` only the others"
            + ("" if results.get("mask_templates") else "; no MaskTheFace templates were given, so "
               "procedural masks only") + ". The small-face masked set wears the `masked` masks. "
            "Enrolment's synthetic-mask templates are the fixed styles of `maskwatch.enrol` "
            "(an N95 among them): held out means held out from training, not from the gallery.", ""]
    return out


def _fold_thresholds(r: dict[str, Any]) -> str:
    """``fold 1 / fold 2 (all strangers)`` thresholds of one open-set result."""
    folds = " / ".join(_num(f["threshold"]) for f in r["folds"])
    return f"{folds} ({_num(_ceil3(r['recommended']['threshold']))})"


def _side_by_side(results: dict[str, Any]) -> list[str]:
    """The table that opens a run with a student: every configuration and scheme, with
    the issue's targets beside the figures."""
    configs = results["configurations"]
    schemes = results["configuration_schemes"]
    cols = [(cfg, sch) for cfg in configs for sch in schemes]
    stu = results.get("student") or {}
    px = results.get("probe_face_px")

    def closed(set_name: str, get: Any) -> list[float | None]:
        return [get(configs[c]["closed_set"][set_name][s])
                if set_name in configs[c]["closed_set"] else None for c, s in cols]

    def opened(set_name: str, get: Any) -> list[Any]:
        return [get(configs[c]["open_set"][set_name][s])
                if set_name in configs[c]["open_set"] else None for c, s in cols]

    def tar(far: str) -> Any:
        return lambda r: r["tar"].get(far, {}).get("tar")

    rows: list[tuple[str, str | None, float | None, list[Any]]] = []  # label, op, target, values
    for set_name, label in (("unmasked", "unmasked"), ("masked", "masked (held-out)"),
                            ("masked_seen", "masked_seen (training families)")):
        rank1_goal = {"unmasked": TARGETS["unmasked_rank1"],
                      "masked": TARGETS["masked_rank1"]}.get(set_name)
        rows.append((f"{label} rank-1", ">=" if rank1_goal else None, rank1_goal,
                     closed(set_name, lambda r: r["rank1"])))
        tar_goal = TARGETS["masked_tar_far1e-3"] if set_name == "masked" else None
        rows.append((f"{label} TAR @ FAR 1e-3", ">=" if tar_goal else None, tar_goal,
                     closed(set_name, tar("1e-3"))))
        rows.append((f"{label} TAR @ FAR 1e-2", None, None, closed(set_name, tar("1e-2"))))
    if px and f"masked_{px}px" in configs["sface"]["closed_set"]:
        rows.append((f"masked {px} px faces rank-1", ">=", TARGETS["small_masked_rank1"],
                     closed(f"masked_{px}px", lambda r: r["rank1"])))
    for set_name, label in (("masked", "masked"), ("masked_seen", "masked_seen")):
        if set_name not in configs["sface"]["open_set"]:
            continue
        held = set_name == "masked"
        rows.append((f"open set: unknown {label} probes named", "<=" if held else None,
                     TARGETS["open_set_unknown_named_max"] if held else None,
                     opened(set_name, lambda r: r["pooled"]["unknown_named"])))
        rows.append((f"open set: known {label} probes named right", ">=" if held else None,
                     TARGETS["open_set_known_correct_min"] if held else None,
                     opened(set_name, lambda r: r["pooled"]["known_correct"])))
    thresholds: list[tuple[str, list[str]]] = []
    for set_name in ("unmasked", "masked", "masked_seen"):
        if set_name not in configs["sface"]["open_set"]:
            continue
        thresholds.append((f"open set: {set_name} thresholds, fold 1 / fold 2 (all strangers)",
                           opened(set_name, _fold_thresholds)))

    out = ["## Side by side: SFace and the student", "",
           f"Student `{stu.get('name', '?')} v{stu.get('version', '?')}` "
           f"(`{stu.get('path', '')}`, embeddings in the space of `{stu.get('space', '?')}`) "
           f"beside `{_emb_label(results)}`, on the same images, detections and aligned crops "
           "(each crop embedded by both). Configurations: `sface` = SFace everywhere (the "
           "baseline); `student_masked` = gallery templates and unmasked probes by SFace, masked "
           "probes (every masked set) by the student (the run-time mode 'student for masked faces "
           "only'); `student` = the student everywhere, templates included. Schemes: `plain` = "
           "probes against plain templates, `mask_aware` = masked probes against synthetic-mask "
           "templates (`EmbeddingMatcher.identify`). Open set: thresholds calibrated on other "
           f"people (at most {pct(results['calibration_fpir'])} of a stranger half named), as in "
           "the Open set section.", ""]
    header = ["figure", "target"] + [f"{c} {s}" for c, s in cols]
    body = []
    for label, op, target, values in rows:
        cells = []
        for v in values:
            met = target is not None and v is not None and _meets(v, op or ">=", target)
            mark = "" if target is None or v is None else (" ✓" if met else " ✗")
            cells.append(pct(v, 2) + mark)
        body.append([label, f"{op} {pct(target)}" if target is not None else ""] + cells)
    for label, values in thresholds:
        body.append([label, ""] + [v if v is not None else "n/a" for v in values])
    out += _table(header, body)
    ms = (results.get("timing_ms") or {}).get("embed_only_median") or {}
    if ms:
        out += ["Median time per face, aligned crop to embedding (one face per run): "
                + ", ".join(f"{who} {_ms(v)} ms" for who, v in ms.items()) + "; alignment "
                f"{_ms(results['timing_ms'].get('align_median'))} ms, done once for both.", ""]
    return out
