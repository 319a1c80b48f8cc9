"""``maskwatch bench``: per-stage latency and end-to-end throughput on this CPU.

Frames are 640x480 and composed from the shared data: LFW faces (half of them with a
mask rendered from their landmarks) on a plain textured background, drifting a few
pixels per frame like people in front of a camera. Each configuration runs the same
frames, the modes taking turns of 10 frames so that the machine's drifts in speed fall
on all of them alike:

- ``tracked``: the engine as shipped for video (tracking; mask classification when a
  track appears and every 10 frames; recognition of new tracks and every 30 frames);
- ``every-frame``: every stage on every face of every frame (no tracking);
- ``baseline``: res10 SSD detector and a MobileNetV2 classifier at 224x224 with the
  ``dense`` head (Flatten, Dense 1024, Dropout, output) on every face of every frame,
  one face at a time (the student project maskwatch started from worked this way).
  Its weights here are ImageNet backbone + untrained head: only its compute is
  measured. Needs the [train] extra to build it once.
"""

from __future__ import annotations

import platform
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from maskwatch.models.detector import SSDDetector, YuNetDetector
from maskwatch.models.embedder import SFaceEmbedder
from maskwatch.models.mask_classifier import MaskClassifier
from maskwatch.ops.crop import crops_to_tensor, face_crops
from maskwatch.ops.image import list_images, read_image
from maskwatch.ops.quality import DEFAULT_RULE, QualityRule
from maskwatch.pipeline import Pipeline, PipelineConfig
from maskwatch.recognition import EmbeddingMatcher

FRAME_W, FRAME_H = 640, 480


@dataclass
class FaceSprite:
    image: np.ndarray  # square BGR face crop
    size: int
    x: float
    y: float
    phase: float


def _background(rng: np.random.Generator) -> np.ndarray:
    base = (np.linspace(60, 180, FRAME_W, dtype=np.float32)[None, :, None]
            .repeat(FRAME_H, 0).repeat(3, 2))
    noise = cv2.GaussianBlur(rng.normal(0, 25, (FRAME_H, FRAME_W, 3)).astype(np.float32), (0, 0), 6)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def compose_sequence(lfw_root: Path, n_faces: int, n_frames: int,
                     seed: int = 0) -> list[np.ndarray]:
    """Frames with ``n_faces`` LFW faces (every other one masked) drifting slowly."""
    from maskwatch.ops.synthmask import render_mask

    rng = np.random.default_rng(seed)
    files = list_images(lfw_root)
    picks = rng.choice(len(files), n_faces, replace=False)
    det = YuNetDetector()
    cols = min(n_faces, 5)
    rows = int(np.ceil(n_faces / cols))
    cell_w, cell_h = FRAME_W / cols, FRAME_H / rows
    size = int(min(cell_w, cell_h) * 0.8)
    sprites = []
    for k, idx in enumerate(picks):
        img = read_image(files[int(idx)])
        if k % 2 == 1:
            faces = det.detect(img)
            if len(faces):
                i = int(np.argmax(faces.widths))
                img = render_mask(img, faces.landmarks[i], faces.boxes[i], rng=rng)
        crop = cv2.resize(img[40:210, 40:210], (size, size), interpolation=cv2.INTER_AREA)
        r, c = divmod(k, cols)
        sprites.append(FaceSprite(crop, size, c * cell_w + (cell_w - size) / 2,
                                  r * cell_h + (cell_h - size) / 2, float(rng.uniform(0, 6.28))))
    bg = _background(rng)
    frames = []
    for t in range(n_frames):
        frame = bg.copy()
        for s in sprites:
            dx = 6 * np.sin(t / 15 + s.phase)
            dy = 4 * np.cos(t / 20 + s.phase)
            x = int(np.clip(s.x + dx, 0, FRAME_W - s.size))
            y = int(np.clip(s.y + dy, 0, FRAME_H - s.size))
            frame[y:y + s.size, x:x + s.size] = s.image
        frames.append(frame)
    return frames


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms, np.float64)
    if not len(a):
        return {"median_ms": float("nan"), "p95_ms": float("nan"), "fps": float("nan")}
    return {"median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95)),
            "fps": float(1e3 / a.mean())}


class SsdMobileNetBaseline:
    """The baseline's per-frame work: res10 SSD, then MobileNetV2-224 (dense head) per face."""

    def __init__(self, onnx_path: Path, threads: int | None = None) -> None:
        from maskwatch.models._ort import cpu_session

        # The same session settings as MaskClassifier (no spinning threads taking the
        # SSD's cores), so the ratio compares the work, not the configuration.
        self.session = cpu_session(str(onnx_path), threads)
        self.detector = SSDDetector()

    def process(self, frame: np.ndarray) -> int:
        faces = self.detector.detect(frame)
        for i in range(len(faces)):  # one face at a time, no batching
            crop = face_crops(frame, faces.boxes[i:i + 1], 224, 0.0)
            self.session.run(None, {"input": crops_to_tensor(crop)})
        return len(faces)


def build_baseline_classifier(path: Path) -> Path | None:
    """Export MobileNetV2-224 + dense head to ONNX once; None without the [train] extra."""
    if path.is_file():
        return path
    try:
        import torch  # noqa: F401

        from maskwatch.models.mask_classifier import ModelInfo
        from maskwatch.train.backbones import MaskNet
        from maskwatch.train.export import export_onnx
    except ImportError:
        return None
    try:
        net = MaskNet("mobilenet_v2", 2, 224, head="dense")
    except Exception:  # noqa: BLE001 - weights package missing
        net = None
    if net is None:
        return None
    export_onnx(net, path, ModelInfo(class_names=["with_mask", "without_mask"], input_size=224,
                                     margin=0.0, backbone="mobilenet_v2", head="dense"))
    return path


def run_bench(datasets: Path, *, frames: int = 90, warmup: int = 10,
              face_counts: tuple[int, ...] = (1, 3, 10), threads: int | None = None,
              cache_dir: Path | None = None, log: Any = print) -> dict[str, Any]:
    """Run every measurement and return the figures (also printed through ``log``)."""
    lfw = datasets / "lfw-identities" / "images"
    if not lfw.is_dir():
        raise FileNotFoundError(f"{lfw}: the benchmark composes its frames from this folder")
    cache_dir = cache_dir or Path.home() / ".cache" / "maskwatch"
    cache_dir.mkdir(parents=True, exist_ok=True)
    clf = MaskClassifier(threads=threads)
    embedder = SFaceEmbedder()
    # A gallery of every LFW person (2 photos each), the size of a small deployment.
    people = sorted(d for d in lfw.iterdir() if d.is_dir())
    det = YuNetDetector()
    names, embs = [], []
    for person in people:
        for f in sorted(person.iterdir())[:2]:
            img = read_image(f)
            faces = det.detect(img)
            if len(faces):
                i = int(np.argmax(faces.widths))
                embs.append(embedder.embed(img, faces[i])[0])
                names.append(person.name)
    matcher = EmbeddingMatcher.from_arrays(names, np.stack(embs), threshold=0.4,
                                           masked_threshold=0.4)
    baseline_path = build_baseline_classifier(cache_dir / "baseline_mobilenetv2_224_dense.onnx")
    baseline = SsdMobileNetBaseline(baseline_path, threads) if baseline_path else None

    results: dict[str, Any] = {
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "cores": __import__("os").cpu_count(),
                    "python": platform.python_version(), "opencv": cv2.__version__},
        "frames_per_config": frames, "gallery_templates": len(matcher), "configs": {},
    }
    log(f"maskwatch bench: 640x480 frames, {frames} per configuration after {warmup} warm-up; "
        f"gallery of {len(matcher)} templates; "
        f"classifier {clf.info.backbone} {clf.info.input_size}px")
    for n in face_counts:
        seq = compose_sequence(lfw, n, frames + warmup, seed=n)
        cfg: dict[str, Any] = {}
        # Per-stage latency on these frames.
        det_ms, cls_ms, emb_ms, found = [], [], [], []
        for k, frame in enumerate(seq):
            t0 = time.perf_counter()
            faces = det.detect(frame)
            t1 = time.perf_counter()
            clf.classify(frame, faces)
            t2 = time.perf_counter()
            if len(faces):
                embedder.embed(frame, faces[:1])
            t3 = time.perf_counter()
            if k >= warmup:
                det_ms.append((t1 - t0) * 1e3)
                cls_ms.append((t2 - t1) * 1e3 / max(len(faces), 1))
                if len(faces):
                    emb_ms.append((t3 - t2) * 1e3)
                found.append(len(faces))
        cfg["faces_found_mean"] = float(np.mean(found))
        cfg["detect"] = _stats(det_ms)
        cfg["classify_per_face"] = _stats(cls_ms)
        cfg["embed_per_face"] = _stats(emb_ms)
        runners: dict[str, Any] = {}
        # "tracked-no-rule" is the tracked engine without the quality rule (every face
        # judged): its difference to "tracked" is what measuring the faces costs.
        for mode, track, rule in (("tracked", True, DEFAULT_RULE),
                                  ("tracked-no-rule", True, QualityRule()),
                                  ("every-frame", False, DEFAULT_RULE)):
            engine = Pipeline(PipelineConfig(track=track, threads=threads, quality=rule),
                              detector=det, classifier=clf, embedder=embedder, matcher=matcher)
            runners[mode] = lambda frame, k, e=engine: e.process(frame, k, k / 30)
        if baseline is not None:
            runners["baseline"] = lambda frame, k: baseline.process(frame)
        for mode, ms in _interleaved(runners, seq, warmup).items():
            cfg[mode] = _stats(ms)
        if baseline is not None:
            cfg["speedup_vs_baseline"] = cfg["tracked"]["fps"] / cfg["baseline"]["fps"]
        results["configs"][str(n)] = cfg
        log(_format_config(n, cfg))
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    log(f"peak resident memory of this process: {results['peak_rss_mb']:.0f} MB")
    return results


#: Frames each mode runs before the next mode's turn (see :func:`_interleaved`).
TURN_FRAMES = 10


def _interleaved(runners: dict[str, Any], seq: list[np.ndarray],
                 warmup: int) -> dict[str, list[float]]:
    """Milliseconds per frame of each runner, ``runner(frame, index)``.

    Every runner goes through the whole sequence in order (the tracked engine keeps its
    tracks), but they take turns of :data:`TURN_FRAMES` frames: this machine's speed
    drifts by tens of percent within a minute, and a slow spell then falls on every mode
    alike instead of on one, so the speed-up stays a fair ratio.
    """
    times: dict[str, list[float]] = {mode: [] for mode in runners}
    for start in range(0, len(seq), TURN_FRAMES):
        for mode, run in runners.items():
            for k in range(start, min(start + TURN_FRAMES, len(seq))):
                t0 = time.perf_counter()
                run(seq[k], k)
                if k >= warmup:
                    times[mode].append((time.perf_counter() - t0) * 1e3)
    return times


def _format_config(n: int, cfg: dict[str, Any]) -> str:
    lines = [f"\n{n} face(s) per frame (found {cfg['faces_found_mean']:.1f} on average)",
             f"  {'stage / mode':<26}{'median ms':>10}{'p95 ms':>9}{'fps':>8}"]
    for key, label in (("detect", "detect (YuNet)"), ("classify_per_face", "classify, per face"),
                       ("embed_per_face", "embed (SFace), per face"),
                       ("tracked", "end to end, tracked"),
                       ("tracked-no-rule", "  same, no quality rule"),
                       ("every-frame", "end to end, every frame"),
                       ("baseline", "baseline (SSD+MobileNetV2)")):
        if key in cfg:
            s = cfg[key]
            fps = (f"{s['fps']:>8.1f}" if key in ("tracked", "tracked-no-rule", "every-frame",
                                                  "baseline") else " " * 8)
            lines.append(f"  {label:<26}{s['median_ms']:>10.2f}{s['p95_ms']:>9.2f}{fps}")
    if "speedup_vs_baseline" in cfg:
        lines.append(f"  speed-up of tracked over the baseline: {cfg['speedup_vs_baseline']:.1f}x")
    return "\n".join(lines)
