"""``maskwatch train-embedder``: a mask-invariant face embedder distilled from SFace.

The student is SFace itself (same graph, :mod:`maskwatch.train.sface_torch`), trained so
that a face wearing a synthetic mask lands where frozen SFace puts the same face without
it, and an unmasked face stays where SFace puts it:

    loss = mean(1 - cos(student(masked), SFace(plain)))
           + plain_weight * mean(1 - cos(student(plain), SFace(plain)))

So the student's embeddings live in SFace's space: a masked probe embedded by the
student is matched against the plain templates SFace already made, and no gallery needs
re-enrolling.

Three stages, each cached in the output folder so that a run resumes where it stopped:

1. **crops** (``cache/crops-*.npy``): every photo of the training folders is detected by
   YuNet and aligned exactly as at run time (SFace's five-point ``alignCrop``); each
   gets ``masks_per_face`` synthetic masks from every family except the held-out ones
   (:func:`~maskwatch.ops.synthmask.training_mask_style`: procedural shapes, colours
   and textures, and MaskTheFace templates when given; a share below the nose), and the
   masked photo is detected again, as the live system sees it, before it is aligned.
2. **features** (``cache/feat-*.npy``): the front of the network (Conv units before
   ``cut_unit``) is frozen, so it runs once per crop (OpenVINO or onnxruntime) and its
   7 x 7 output is cached in float16; SFace's embeddings of the plain crops are the
   targets. Depthwise convolutions train slowly on a CPU; the frozen front is what
   makes epochs take minutes on two cores.
3. **training** of the back (the last Conv units and the Gemm head, BatchNorm statistics
   fixed) with Adam and a cosine learning rate; a checkpoint after every epoch
   (``checkpoint.pt``, resumed on the next start), validation on people held out of
   ``lfw-train`` (masked rank-1 against SFace's plain templates, and the mean cosine to
   the target), the best epoch kept and written as ``student.onnx``.

The report folder holds ``report.md`` (with a model card), ``history.json``,
``curves.png`` and ``metadata.json``. Recognition figures of the student come from
``maskwatch evaluate --task recognition --embedder student.onnx`` on ``lfw-identities``,
people no stage here saw, with mask families it never saw.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from maskwatch.models.embedder import SFACE_NAME as TEACHER_NAME
from maskwatch.models.embedder import sface_input

log = logging.getLogger(__name__)

#: Name, version and space of the student a run writes (galleries record name and version).
STUDENT_NAME = "sface-masked-student"
STUDENT_VERSION = "1"
#: Face crops are SFace's aligned 112 x 112.
CROP = 112
_CACHE_VERSION = 1


@dataclass
class EmbedderTrainConfig:
    """Settings of one distillation run (all saved in ``metadata.json``).

    Attributes:
        datasets: the shared datasets folder (``lfw-train/`` and the unmasked faces of
            ``mask-classification/`` are read from it; ``identity-examples/`` is left out:
            its people are the ones the recognition tests and the demo clip name).
        out: the run folder: cache, checkpoints, report and ``student.onnx``.
        mask_templates: MaskTheFace-style template folder (None: procedural masks only).
        masks_per_face: synthetic masks drawn per photo (cached).
        below_nose: share of the masks drawn below the nose.
        cut_unit: first Conv unit that trains (SFace has 27; 24 = the last 3 and the head).
        epochs, batch, lr, weight_decay: optimisation (Adam, cosine schedule).
        plain_weight: weight of the unmasked term of the loss.
        anchor_weight: weight of a pull towards SFace's weights: the squared change of
            the trained weights relative to their size (0: none).
        train_head: train the Gemm head too (False: only the Conv units from ``cut_unit``).
        val_people: share of ``lfw-train`` people held out for validation.
        limit: use at most this many photos (0: all), for quick runs and tests.
        seed: every random choice (masks, split, batches).
        threads: worker processes for the crops and threads for torch.
        progress: progress bars.
    """

    datasets: Path
    out: Path
    mask_templates: Path | None = None
    masks_per_face: int = 5
    below_nose: float = 0.2
    cut_unit: int = 24
    epochs: int = 10
    batch: int = 64
    lr: float = 3e-4
    weight_decay: float = 0.0
    plain_weight: float = 0.5
    anchor_weight: float = 0.0
    train_head: bool = False
    val_people: float = 0.05
    limit: int = 0
    seed: int = 0
    threads: int = 2
    progress: bool = True
    sources: list[str] = field(default_factory=lambda: [
        "lfw-train/images", "mask-classification/without_mask"])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


# --------------------------------------------------------------------------- photos


def training_photos(config: EmbedderTrainConfig) -> list[tuple[str, str]]:
    """``(path, group)`` of every training photo, sorted; ``group`` is the person for
    folders of people (``lfw-train``), the file otherwise.

    Raises:
        ValueError: none of the source folders exists.
    """
    from maskwatch.ops.image import list_images

    out: list[tuple[str, str]] = []
    found = False
    for rel in config.sources:
        root = Path(config.datasets) / rel
        if not root.is_dir():
            log.warning("%s: not found, skipped", root)
            continue
        found = True
        subdirs = sorted(p for p in root.iterdir() if p.is_dir())
        if subdirs:
            for person in subdirs:
                out += [(str(p), f"{rel}/{person.name}") for p in list_images(person)]
        else:
            out += [(str(p), f"{rel}/{p.name}") for p in list_images(root)]
    if not found:
        raise ValueError(f"{config.datasets}: none of {', '.join(config.sources)} found")
    if config.limit > 0:
        rng = np.random.default_rng(config.seed)
        keep = np.sort(rng.choice(len(out), size=min(config.limit, len(out)), replace=False))
        out = [out[i] for i in keep]
    return out


def is_validation(group: str, share: float) -> bool:
    """Whether a person of ``lfw-train`` is held out for validation (stable hash)."""
    if not group.startswith("lfw-train/"):
        return False
    return (zlib.crc32(group.encode()) % 10_000) < share * 10_000


# --------------------------------------------------------------------------- stage 1: crops

_worker: dict[str, Any] = {}


def _init_worker(templates_dir: str | None) -> None:
    cv2.setNumThreads(1)
    from maskwatch.models.detector import YuNetDetector
    from maskwatch.models.embedder import SFaceEmbedder
    from maskwatch.ops.synthmask import MaskTemplates

    _worker["det"] = YuNetDetector()
    _worker["sface"] = SFaceEmbedder(backend="opencv")  # for its alignment, as at run time
    _worker["templates"] = MaskTemplates.from_folder(templates_dir) if templates_dir else None


def _crop_job(
    args: tuple[int, str, int, float, int],
) -> tuple[int, np.ndarray | None, np.ndarray | None, int]:
    """Plain and masked aligned crops of one photo: ``(index, plain, masked, redetected)``."""
    from maskwatch.ops.boxes import best_overlap, nearest_to_centre
    from maskwatch.ops.image import ImageError, read_image
    from maskwatch.ops.synthmask import render_mask, training_mask_style

    index, path, k, below_nose, seed = args
    try:
        image = read_image(path)
    except ImageError:
        return index, None, None, 0
    det = _worker["det"]
    faces = det.detect(image)
    centre = nearest_to_centre(faces.boxes, image.shape)  # LFW photos: the subject
    if centre is None:
        return index, None, None, 0
    face = faces[centre]
    align = _worker["sface"].align
    plain = align(image, face)[0]
    rng = np.random.default_rng([seed, 7919, index])
    masked = np.zeros((k, CROP, CROP, 3), np.uint8)
    found = 0
    for j in range(k):
        style = training_mask_style(rng, _worker["templates"])
        position = "below_nose" if rng.random() < below_nose else "proper"
        img = render_mask(image, face.landmarks[0], face.boxes[0], position=position, style=style,
                          rng=rng, templates=_worker["templates"])
        redetected = det.detect(img)
        j_again = best_overlap(redetected.boxes, face.boxes[0])  # the same face, masked
        found += j_again is not None
        masked[j] = align(img, face if j_again is None else redetected[j_again])[0]
    return index, plain, masked, found


def make_crops(config: EmbedderTrainConfig, photos: list[tuple[str, str]],
               cache: Path) -> dict[str, Any]:
    """Stage 1: aligned plain and masked crops of every photo, cached in ``cache``."""
    from multiprocessing import get_context

    from tqdm import tqdm

    info_path = cache / "crops.json"
    key = {"version": _CACHE_VERSION, "photos": len(photos), "k": config.masks_per_face,
           "below_nose": config.below_nose, "seed": config.seed,
           "templates": str(config.mask_templates),
           "first": photos[0][0] if photos else "", "last": photos[-1][0] if photos else ""}
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("key") == key:
            return info
    n, k = len(photos), config.masks_per_face
    plain = np.lib.format.open_memmap(cache / "crops-plain.npy", "w+", np.uint8, (n, CROP, CROP, 3))
    masked = np.lib.format.open_memmap(cache / "crops-masked.npy", "w+", np.uint8,
                                       (n, k, CROP, CROP, 3))
    ok = np.zeros(n, bool)
    redetected = 0
    jobs = [(i, p, k, config.below_nose, config.seed) for i, (p, _) in enumerate(photos)]
    templates = str(config.mask_templates) if config.mask_templates else None
    t0 = time.perf_counter()
    with get_context("spawn").Pool(max(1, config.threads), _init_worker, (templates,)) as pool:
        for i, p, m, found in tqdm(pool.imap_unordered(_crop_job, jobs, chunksize=16), total=n,
                                   desc="crops", unit="photo", disable=not config.progress):
            if p is not None:
                plain[i], masked[i], ok[i] = p, m, True
                redetected += found
    plain.flush()
    masked.flush()
    info = {"key": key, "ok": ok.tolist(), "groups": [g for _, g in photos],
            "masked_redetected": redetected, "masked_total": int(ok.sum()) * k,
            "seconds": round(time.perf_counter() - t0, 1)}
    info_path.write_text(json.dumps(info))
    return info


# --------------------------------------------------------------------------- stage 2: features


def _prefix_runner(cut: int, threads: int) -> Any:
    """A function running SFace's nodes before ``cut`` (OpenVINO or onnxruntime)."""
    import importlib.util

    import onnx
    from onnx import helper

    from maskwatch.models.embedder import sface_fp32_model, sface_model_path

    proto = onnx.load_from_string(sface_fp32_model(sface_model_path()))
    g = proto.graph
    nodes = list(g.node)[:cut]
    out = helper.make_tensor_value_info(nodes[-1].output[0], onnx.TensorProto.FLOAT, None)
    reads = {name for node in nodes for name in node.input}
    graph = helper.make_graph(nodes, "sface_front", list(g.input), [out],
                              [t for t in g.initializer if t.name in reads])
    data = helper.make_model(graph, opset_imports=proto.opset_import,
                             ir_version=proto.ir_version).SerializeToString()
    if importlib.util.find_spec("openvino") is not None:
        from maskwatch.models.embedder import _OpenVINORunner

        return _OpenVINORunner(data, threads).run
    from maskwatch.models._ort import cpu_session

    session = cpu_session(data, threads)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def make_features(config: EmbedderTrainConfig, cache: Path, crops_info: dict[str, Any],
                  cut: int) -> dict[str, Any]:
    """Stage 2: the frozen front's output of every crop (float16) and SFace's embeddings."""
    from tqdm import tqdm

    from maskwatch.models.embedder import SFaceEmbedder

    info_path = cache / "features.json"
    key = {"crops": crops_info["key"], "cut": cut}
    if info_path.is_file() and json.loads(info_path.read_text()).get("key") == key:
        return json.loads(info_path.read_text())
    ok = np.flatnonzero(np.array(crops_info["ok"], bool))
    plain = np.load(cache / "crops-plain.npy", mmap_mode="r")
    masked = np.load(cache / "crops-masked.npy", mmap_mode="r")
    k = masked.shape[1]
    run = _prefix_runner(cut, config.threads)
    shape = run(sface_input(plain[ok[:1]])).shape[1:]
    n = len(ok)
    f_plain = np.lib.format.open_memmap(cache / "feat-plain.npy", "w+", np.float16, (n, *shape))
    f_masked = np.lib.format.open_memmap(cache / "feat-masked.npy", "w+", np.float16,
                                         (n, k, *shape))
    teacher = np.zeros((n, 128), np.float32)
    teacher_masked = np.zeros((n, k, 128), np.float32)
    sface = SFaceEmbedder(threads=config.threads)
    step = 32
    t0 = time.perf_counter()
    for s in tqdm(range(0, n, step), desc="features", unit="batch", disable=not config.progress):
        idx = ok[s:s + step]
        p = plain[idx]
        m = masked[idx].reshape(-1, CROP, CROP, 3)
        f_plain[s:s + len(idx)] = run(sface_input(p)).astype(np.float16)
        f_masked[s:s + len(idx)] = (run(sface_input(m)).astype(np.float16)
                                    .reshape(len(idx), k, *shape))
        teacher[s:s + len(idx)] = sface.embed_aligned(p)
        teacher_masked[s:s + len(idx)] = sface.embed_aligned(m).reshape(len(idx), k, 128)
    f_plain.flush()
    f_masked.flush()
    np.save(cache / "teacher-plain.npy", teacher)
    np.save(cache / "teacher-masked.npy", teacher_masked)
    info = {"key": key, "rows": ok.tolist(), "shape": list(shape), "backend": sface.backend,
            "seconds": round(time.perf_counter() - t0, 1)}
    info_path.write_text(json.dumps(info))
    return info


# --------------------------------------------------------------------------- stage 3: training


def _cos_loss(a: Any, b: Any) -> Any:
    from torch.nn import functional as F

    return (1.0 - F.cosine_similarity(a, b, dim=1)).mean()


def _normed(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def masked_rank1(gallery: np.ndarray, g_person: np.ndarray, probes: np.ndarray,
                 p_person: np.ndarray) -> float:
    """Share of probes whose most similar gallery embedding is their own person's."""
    if len(probes) == 0:
        return float("nan")
    sims = _normed(probes) @ _normed(gallery).T
    return float(np.mean(g_person[np.argmax(sims, axis=1)] == p_person))


def validation_protocol(groups: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For validation rows: gallery rows (first photo of each person with 2 or more),
    their person ids, probe rows (the other photos) and theirs."""
    by: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by.setdefault(g, []).append(i)
    g_rows, g_pid, p_rows, p_pid = [], [], [], []
    for pid, rows in enumerate(by.values()):
        if len(rows) < 2:
            continue
        g_rows.append(rows[0])
        g_pid.append(pid)
        p_rows += rows[1:]
        p_pid += [pid] * (len(rows) - 1)
    return np.array(g_rows, int), np.array(g_pid, int), np.array(p_rows, int), np.array(p_pid, int)


def train_embedder(config: EmbedderTrainConfig) -> dict[str, Any]:
    """Run (or resume) one distillation run; returns the summary written to ``metadata.json``."""
    import torch

    from maskwatch.train.sface_torch import load_sface, write_student

    out = Path(config.out)
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, config.threads))
    torch.manual_seed(config.seed)
    t_start = time.perf_counter()

    photos = training_photos(config)
    log.info("%d photos", len(photos))
    crops_info = make_crops(config, photos, cache)
    net = load_sface()
    if not 0 < config.cut_unit < net.units:
        raise ValueError(f"cut_unit must be between 1 and {net.units - 1}, got {config.cut_unit}")
    cut = net.unit_start(config.cut_unit)
    feat_info = make_features(config, cache, crops_info, cut)

    rows = np.array(feat_info["rows"], int)
    groups = [crops_info["groups"][r] for r in rows]
    val = np.array([is_validation(g, config.val_people) for g in groups], bool)
    train_idx, val_idx = np.flatnonzero(~val), np.flatnonzero(val)
    f_plain = np.load(cache / "feat-plain.npy", mmap_mode="r")
    f_masked = np.load(cache / "feat-masked.npy", mmap_mode="r")
    teacher = np.load(cache / "teacher-plain.npy")
    teacher_masked = np.load(cache / "teacher-masked.npy")
    k = f_masked.shape[1]
    log.info("training faces %d, validation faces %d", len(train_idx), len(val_idx))

    for node in net.nodes[:cut]:
        node.requires_grad_(False)
    if not config.train_head:
        for node in net.nodes:
            if node.op == "Gemm":
                node.requires_grad_(False)
    params = [p for node in net.nodes[cut:] for p in node.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]
    start_norm = float(sum(float((p * p).sum()) for p in start))
    opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(train_idx) / config.batch))
    total_steps = steps_per_epoch * config.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))

    g_rows, g_pid, p_rows, p_pid = validation_protocol([groups[i] for i in val_idx])
    g_rows, p_rows = val_idx[g_rows], val_idx[p_rows]

    def tail(h: np.ndarray) -> Any:
        return net.tail(torch.from_numpy(np.asarray(h, np.float32)), cut)

    def validate() -> dict[str, float]:
        net.eval()
        with torch.no_grad():
            plain_s = np.concatenate([tail(f_plain[val_idx[s:s + 256]]).numpy()
                                      for s in range(0, len(val_idx), 256)]) \
                if len(val_idx) else np.zeros((0, 128))
            masked_s = np.concatenate([
                tail(f_masked[val_idx[s:s + 64]].reshape(-1, *f_masked.shape[2:])).numpy()
                for s in range(0, len(val_idx), 64)]).reshape(len(val_idx), k, 128) \
                if len(val_idx) else np.zeros((0, k, 128))
        pos = {r: i for i, r in enumerate(val_idx)}
        t = teacher[val_idx]
        cos_m = float(np.mean(np.sum(_normed(masked_s) * t[:, None], -1))) \
            if len(val_idx) else float("nan")
        cos_p = float(np.mean(np.sum(_normed(plain_s) * t, -1))) if len(val_idx) else float("nan")
        gal = teacher[g_rows]  # SFace's plain templates, as in a gallery
        pr = np.array([pos[r] for r in p_rows], int)
        rank1 = np.mean([masked_rank1(gal, g_pid, masked_s[pr, j], p_pid) for j in range(k)]) \
            if len(pr) else float("nan")
        return {"val_masked_cos": cos_m, "val_plain_cos": cos_p, "val_masked_rank1": float(rank1)}

    # the teacher's own figures on the same validation faces (the student starts there)
    base = {
        "val_masked_cos": float(np.mean(np.sum(
            teacher_masked[val_idx] * teacher[val_idx][:, None], -1))),
        "val_plain_cos": 1.0,
        "val_masked_rank1": float(np.mean([
            masked_rank1(teacher[g_rows], g_pid, teacher_masked[p_rows, j], p_pid)
            for j in range(k)]))
        if len(p_rows) else float("nan"),
    }

    ckpt_path = out / "checkpoint.pt"
    history: dict[str, list[float]] = {"epoch": [], "train_loss": [], "train_masked_loss": [],
                                       "train_plain_loss": [], "val_masked_cos": [],
                                       "val_plain_cos": [], "val_masked_rank1": [], "lr": [],
                                       "epoch_seconds": []}
    best: dict[str, Any] = {"epoch": 0, "score": -1.0}
    start_epoch = 0
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, weights_only=False)
        if state.get("config_key") == _config_key(config):
            net.load_state_dict(state["net"])
            opt.load_state_dict(state["opt"])
            sched.load_state_dict(state["sched"])
            history, best, start_epoch = state["history"], state["best"], state["epoch"]
            log.info("resumed after epoch %d", start_epoch)
    from tqdm import tqdm

    rng = np.random.default_rng(config.seed)
    for _ in range(start_epoch):  # the same batches as an uninterrupted run
        rng.permutation(len(train_idx))
        rng.integers(0, k, len(train_idx))
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        net.train()
        order = train_idx[rng.permutation(len(train_idx))]
        pick = rng.integers(0, k, len(train_idx))
        sums = np.zeros(3)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", unit="step",
                   disable=not config.progress)
        for s in bar:
            idx = order[s * config.batch:(s + 1) * config.batch]
            # sorted rows read the memory-mapped cache in order
            srt = np.argsort(idx)
            idx, j = idx[srt], pick[s * config.batch:(s + 1) * config.batch][srt]
            target = torch.from_numpy(teacher[idx])
            hm = f_masked[idx, j] if len(idx) else f_masked[:0, 0]
            lm = _cos_loss(tail(hm), target)
            lp = _cos_loss(tail(f_plain[idx]), target)
            loss = lm + config.plain_weight * lp
            if config.anchor_weight > 0:
                change = sum(((p - p0) ** 2).sum() for p, p0 in zip(params, start, strict=True))
                loss = loss + config.anchor_weight * change / start_norm
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            sums += [float(loss.detach()), float(lm.detach()), float(lp.detach())]
            bar.set_postfix(loss=f"{sums[0] / (s + 1):.4f}")
        bar.close()
        v = validate()
        history["epoch"].append(epoch + 1)
        for name, value in zip(("train_loss", "train_masked_loss", "train_plain_loss"),
                               sums / steps_per_epoch, strict=True):
            history[name].append(round(float(value), 6))
        for name, value in v.items():
            history[name].append(round(value, 6))
        history["lr"].append(float(sched.get_last_lr()[0]))
        history["epoch_seconds"].append(round(time.perf_counter() - t0, 1))
        score = v["val_masked_rank1"] + v["val_masked_cos"]  # both on validation people
        if score > best["score"]:
            best = {"epoch": epoch + 1, "score": score, **v}
            torch.save(net.state_dict(), out / "best.pt")
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "history": history, "best": best, "epoch": epoch + 1,
                    "config_key": _config_key(config)}, ckpt_path)
        log.info("epoch %d: loss %.4f, validation masked cos %.4f, masked rank-1 %.4f, "
                 "plain cos %.4f",
                 epoch + 1, history["train_loss"][-1], v["val_masked_cos"], v["val_masked_rank1"],
                 v["val_plain_cos"])

    net.load_state_dict(torch.load(out / "best.pt", weights_only=True))
    doc = ("maskwatch student of SFace 2021dec: masked faces embedded where SFace puts them "
           f"unmasked; best epoch {best['epoch']} of {config.epochs}")
    path = write_student(net, out / "student.onnx", name=STUDENT_NAME, version=STUDENT_VERSION,
                         space=TEACHER_NAME, doc=doc)
    agreement = _onnx_agreement(net, path, f_plain, f_masked, val_idx, cut, cache)
    summary = {
        "config": config.to_dict(),
        "photos": len(photos), "faces": len(rows), "train_faces": int(len(train_idx)),
        "val_faces": int(len(val_idx)), "val_people_with_probes": int(len(g_rows)),
        "masks_per_face": k, "masked_redetected": crops_info["masked_redetected"],
        "masked_total": crops_info["masked_total"],
        "cut_unit": config.cut_unit, "trainable_parameters": int(sum(p.numel() for p in params)),
        "crops_seconds": crops_info["seconds"], "features_seconds": feat_info["seconds"],
        "train_seconds": round(sum(history["epoch_seconds"]), 1),
        "run_seconds_this_start": round(time.perf_counter() - t_start, 1),
        "teacher_on_validation": base, "best": best, "onnx": agreement,
        "onnx_bytes": path.stat().st_size,
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "cpu_count": os.cpu_count(), "threads": config.threads},
    }
    (out / "history.json").write_text(json.dumps(history, indent=2))
    (out / "metadata.json").write_text(json.dumps(summary, indent=2))
    _plot(history, base, out / "curves.png")
    (out / "report.md").write_text(report_markdown(summary, history))
    return summary


def _config_key(config: EmbedderTrainConfig) -> dict[str, Any]:
    d = config.to_dict()
    for k in ("out", "progress", "threads", "datasets"):
        d.pop(k, None)
    return d


def _onnx_agreement(net: Any, path: Path, f_plain: np.ndarray, f_masked: np.ndarray,
                    val_idx: np.ndarray, cut: int, cache: Path) -> dict[str, Any]:
    """Cosine between the written (int8) file, run by the runtime, and the torch student."""
    import torch

    from maskwatch.models._ort import cpu_session
    from maskwatch.models.embedder import sface_fp32_model

    rows = np.load(cache / "crops-plain.npy", mmap_mode="r")
    info = json.loads((cache / "features.json").read_text())
    pick = np.array(info["rows"], int)[val_idx[:64]]
    if len(pick) == 0:
        return {"checked": 0}
    crops = np.asarray(rows[pick])
    session = cpu_session(sface_fp32_model(path), 1)
    got = _normed(session.run(None, {session.get_inputs()[0].name: sface_input(crops)})[0])
    with torch.no_grad():
        ref = _normed(net(torch.from_numpy(sface_input(crops))).numpy())
    cos = np.sum(got * ref, axis=1)
    return {"checked": int(len(pick)), "min_cos_int8_vs_float": round(float(cos.min()), 5),
            "mean_cos_int8_vs_float": round(float(cos.mean()), 5)}


def _plot(history: dict[str, list[float]], base: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4))
    axes = fig.subplots(1, 3)
    x = history["epoch"]
    axes[0].plot(x, history["train_masked_loss"], "o-", label="masked")
    axes[0].plot(x, history["train_plain_loss"], "o-", label="plain")
    axes[0].set_title("training loss (1 - cos to SFace plain)")
    axes[1].plot(x, history["val_masked_cos"], "o-", label="student")
    axes[1].axhline(base["val_masked_cos"], color="grey", ls="--", label="SFace")
    axes[1].set_title("validation: masked face vs its plain SFace embedding (cos)")
    axes[2].plot(x, history["val_masked_rank1"], "o-", label="student")
    axes[2].axhline(base["val_masked_rank1"], color="grey", ls="--", label="SFace")
    axes[2].set_title("validation: masked rank-1 against SFace templates")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def report_markdown(summary: dict[str, Any], history: dict[str, list[float]]) -> str:
    """The run's report and model card."""
    c, b, base = summary["config"], summary["best"], summary["teacher_on_validation"]
    lines = [
        "# Mask-invariant student of SFace: training run",
        "",
        f"Command: `maskwatch train-embedder --datasets {c['datasets']} --out {c['out']}"
        + (f" --mask-templates {c['mask_templates']}"
           if c["mask_templates"] not in (None, "None") else "")
        + f" --masks-per-face {c['masks_per_face']} --below-nose {c['below_nose']}"
        f" --cut-unit {c['cut_unit']}"
        + f" --epochs {c['epochs']} --batch-size {c['batch']} --lr {c['lr']}"
        f" --plain-weight {c['plain_weight']}"
        + (" --train-head" if c["train_head"] else "")
        + (f" --anchor-weight {c['anchor_weight']}" if c["anchor_weight"] else "")
        + f" --seed {c['seed']}`",
        "",
        f"Photos {summary['photos']}, faces found {summary['faces']} "
        f"(training {summary['train_faces']}, validation {summary['val_faces']} of people held "
        f"out of lfw-train); {summary['masks_per_face']} "
        f"synthetic masks per face from the training families (held-out families never drawn), "
        f"{100 * c['below_nose']:.0f}% below the nose; masked faces detected again: "
        f"{summary['masked_redetected']} of {summary['masked_total']}.",
        "",
        f"Trained: Conv units {summary['cut_unit']}-26"
        + (" and the Gemm head" if c["train_head"] else "")
        + f" ({summary['trainable_parameters']:,} parameters), the front frozen and cached; "
        f"Adam lr {c['lr']}, cosine schedule, batch {c['batch']}, "
        f"loss = masked + {c['plain_weight']} x plain (1 - cos to SFace's plain embedding)"
        + (f" + {c['anchor_weight']} x the squared relative change of the weights"
           if c["anchor_weight"] else "")
        + ".",
        "",
        f"Time on {summary['machine']['cpu_count']} cores: crops {summary['crops_seconds']:.0f} s, "
        f"features {summary['features_seconds']:.0f} s, training {summary['train_seconds']:.0f} s.",
        "",
        "| epoch | train loss | masked | plain | val masked cos | val masked rank-1 "
        "| val plain cos |",
        "|---|---|---|---|---|---|---|",
        f"| SFace | | | | {base['val_masked_cos']:.4f} "
        f"| {100 * base['val_masked_rank1']:.2f}% | 1.0000 |",
    ]
    for i, e in enumerate(history["epoch"]):
        mark = " (best)" if e == b["epoch"] else ""
        lines.append(
            f"| {e}{mark} | {history['train_loss'][i]:.4f} "
            f"| {history['train_masked_loss'][i]:.4f} | "
            f"{history['train_plain_loss'][i]:.4f} | {history['val_masked_cos'][i]:.4f} | "
            f"{100 * history['val_masked_rank1'][i]:.2f}% | {history['val_plain_cos'][i]:.4f} |")
    lines += [
        "",
        "![curves](curves.png)",
        "",
        f"`student.onnx`: {summary['onnx_bytes'] / 1e6:.1f} MB "
        "(weights of 64 K values or more in int8 per output channel); "
        "the file as the runtime runs it against the float student: cosine "
        f"{summary['onnx'].get('min_cos_int8_vs_float', float('nan'))} at the least "
        f"({summary['onnx'].get('checked', 0)} validation faces).",
        "",
        "## Model card",
        "",
        f"- **What:** `{STUDENT_NAME}` version {STUDENT_VERSION}, "
        "a face embedder with SFace's architecture "
        "(MobileFaceNet-style, 128-d), whose embeddings are comparable with SFace 2021dec's "
        f"(`{TEACHER_NAME}`): meant for faces wearing a mask, "
        "matched against templates SFace made.",
        "- **Trained on:** LFW people with fewer than 10 photos "
        "(`lfw-train`, none in `lfw-identities`), "
        "unmasked faces of `mask-classification/without_mask`, with synthetic masks "
        "(procedural and MaskTheFace templates) drawn by maskwatch; no identity labels.",
        "- **Evaluated by:** `maskwatch evaluate --task recognition --embedder student.onnx` on "
        "`lfw-identities` with mask families training never used.",
        "- **Limits:** synthetic masks only; LFW faces are mostly frontal, well-lit celebrities; "
        "the teacher's biases are inherited.",
        "- **Licence:** derived from SFace (Apache-2.0).",
        "",
    ]
    return "\n".join(lines)
