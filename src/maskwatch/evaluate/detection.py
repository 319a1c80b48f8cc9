"""``maskwatch evaluate --task detection``: face detection recall and precision.

Runs a detector configuration on VOC scenes and matches its boxes to the labelled
faces (greedy by IoU, threshold ``min_iou``). Recall is given by face size (shorter
side of the labelled box) and by mask class, so the cost of a fast live mode on
small faces is visible next to the accurate photo mode.

Precision counts a detection as false when it matches no labelled face; scenes in
which people are not all labelled make it a lower bound.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from maskwatch.evaluate.metrics import SIZE_BINS
from maskwatch.evaluate.report import pct
from maskwatch.ops.image import ImageError, list_images, read_image
from maskwatch.types import MASK_CLASSES

#: Detector settings evaluated by default: the engine's live mode and its photo mode.
MODES: dict[str, dict[str, Any]] = {
    "live": {"score_threshold": 0.6, "max_side": 640, "upscale": 1.0},
    "accurate": {"score_threshold": 0.6, "max_side": 2048, "upscale": 2.0},
}


def match_boxes(gt: np.ndarray, det: np.ndarray, min_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching by IoU.

    Returns:
        ``(gt_matched, det_matched)``: bool arrays, True where a box found a partner.
    """
    from maskwatch.ops.boxes import iou_matrix

    gm, dm = np.zeros(len(gt), bool), np.zeros(len(det), bool)
    if not len(gt) or not len(det):
        return gm, dm
    iou = iou_matrix(gt, det)
    order = np.dstack(np.unravel_index(np.argsort(-iou, axis=None), iou.shape))[0]
    for i, j in order:
        if iou[i, j] < min_iou:
            break
        if not gm[i] and not dm[j]:
            gm[i] = dm[j] = True
    return gm, dm


def _size_label(size: float) -> str:
    for lo, hi in SIZE_BINS:
        if size >= lo and (hi is None or size < hi):
            return (f"{lo}-{hi}" if hi is not None and lo > 0
                    else (f"<{hi}" if lo == 0 else f"{lo}+"))
    return "?"


def evaluate_detection(
    voc_root: str | Path,
    out_dir: str | Path,
    *,
    detector: str = "yunet",
    modes: dict[str, dict[str, Any]] | None = None,
    min_iou: float = 0.4,
    progress: bool = True,
    limit: int = 0,
) -> dict[str, Any]:
    """Evaluate detector modes on a VOC folder; writes ``detection.json`` and ``detection.md``."""
    from maskwatch.models.detector import SSDDetector, YuNetDetector
    from maskwatch.train.data import SourceSpec, _voc_dirs, check_source, parse_voc

    root = Path(voc_root)
    check_source(SourceSpec("voc", root))
    img_dir, lbl_dir = _voc_dirs(root)
    assert img_dir is not None and lbl_dir is not None
    images = {p.stem: p for p in list_images(img_dir)}
    scenes = []
    for xml in sorted(lbl_dir.glob("*.xml")):
        if xml.stem in images:
            objs = parse_voc(xml)
            scenes.append((images[xml.stem], objs))
    if limit > 0:
        scenes = scenes[:limit]
    if detector == "ssd":
        modes = {"ssd": {}}
    modes = modes or MODES
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"dataset": str(root), "scenes": len(scenes), "min_iou": min_iou,
                               "modes": {}}
    for mode, kw in modes.items():
        det = SSDDetector() if detector == "ssd" else YuNetDetector(**kw)
        sizes, classes, found = [], [], []
        n_det = n_det_matched = 0
        n_det_16 = n_det_16_matched = 0
        ms = []
        for img_path, objs in tqdm(scenes, desc=f"detect {mode}", unit="scene",
                                   disable=not progress):
            try:
                image = read_image(img_path)
            except ImageError:
                continue
            t0 = time.perf_counter()
            faces = det.detect(image)
            ms.append((time.perf_counter() - t0) * 1e3)
            gt = np.array([b for _, b in objs], np.float32).reshape(-1, 4)
            gm, dm = match_boxes(gt, faces.boxes, min_iou)
            gsize = np.minimum(gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]) if len(gt) else np.zeros(0)
            sizes += gsize.tolist()
            classes += [c for c, _ in objs]
            found += gm.tolist()
            n_det += len(faces)
            n_det_matched += int(dm.sum())
            # Precision among detections of 16 px and more (tiny labelled faces are often missed by
            # the labels too, so detections under 16 px are judged only through recall).
            big = faces.sizes >= 16
            n_det_16 += int(big.sum())
            n_det_16_matched += int((dm & big).sum())
        sizes_a, found_a, classes_a = np.array(sizes), np.array(found, bool), np.array(classes)
        by_size = []
        for lo, hi in SIZE_BINS:
            sel = (sizes_a >= lo) & (sizes_a < (hi if hi is not None else np.inf))
            by_size.append({"bin": _size_label(lo), "n": int(sel.sum()),
                            "recall": float(found_a[sel].mean()) if sel.any() else None})
        ge16 = sizes_a >= 16
        by_class = {c: (float(found_a[(classes_a == c) & ge16].mean())
                        if ((classes_a == c) & ge16).any() else None)
                    for c in MASK_CLASSES}
        results["modes"][mode] = {
            "settings": kw,
            "faces": len(sizes),
            "recall_all": float(found_a.mean()) if len(found_a) else None,
            "recall_16_plus": float(found_a[ge16].mean()) if ge16.any() else None,
            "precision": n_det_matched / n_det if n_det else None,
            "precision_16_plus": n_det_16_matched / n_det_16 if n_det_16 else None,
            "detections": n_det,
            "recall_by_size": by_size,
            "recall_16_plus_by_class": by_class,
            "ms_per_scene_median": float(np.median(ms)) if ms else None,
        }
    (out / "detection.json").write_text(json.dumps(results, indent=2))
    (out / "detection.md").write_text(format_detection(results))
    return results


def format_detection(results: dict[str, Any]) -> str:
    """Markdown table of the detection results."""
    bins = [b["bin"] for b in next(iter(results["modes"].values()))["recall_by_size"]]
    lines = [
        f"# Face detection on {results['dataset']}",
        "",
        f"{results['scenes']} scenes; a labelled face counts as found when a detection overlaps it "
        f"with IoU >= {results['min_iou']} (one-to-one).",
        "",
        "| mode | recall >= 16 px | precision | precision (detections >= 16 px) | "
        + " | ".join(f"recall {b} px" for b in bins) + " | masked recall >= 16 px | ms per scene |",
        "|---|---|---|---|" + "---|" * len(bins) + "---|---|",
    ]
    for mode, m in results["modes"].items():
        sizes = " | ".join(f"{pct(b['recall'])} (n={b['n']})" for b in m["recall_by_size"])
        lines.append(
            f"| {mode} | {pct(m['recall_16_plus'])} | {pct(m['precision'])} | "
            f"{pct(m['precision_16_plus'])} | "
            f"{sizes} | {pct(m['recall_16_plus_by_class']['with_mask'])} | "
            f"{m['ms_per_scene_median']:.0f} |"
        )
    return "\n".join(lines) + "\n"
