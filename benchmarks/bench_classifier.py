"""Mask-classifier latency on this CPU: one face at a time, and batched.

Prints median and p95 per call and per face. Crops are real faces from
``../shared/datasets/mask-scenes`` when present, else random pixels (the network's
cost does not depend on the pixels).

    python benchmarks/bench_classifier.py [--model M] [--threads 2] [--runs 300]
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import numpy as np
from _timing import timeit

from maskwatch.models.mask_classifier import MaskClassifier


def real_crops(clf: MaskClassifier, n: int) -> np.ndarray | None:
    root = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "mask-scenes"
    if not root.is_dir():
        return None
    from maskwatch.ops.crop import face_crops
    from maskwatch.ops.image import read_image
    from maskwatch.train.data import parse_voc

    crops = []
    for xml in sorted((root / "labels").glob("*.xml"))[:40]:
        img = read_image(root / "images" / (xml.stem + ".jpg"))
        boxes = np.array([b for _, b in parse_voc(xml)], np.float32)
        crops.append(face_crops(img, boxes, clf.info.input_size, clf.info.margin))
        if sum(len(c) for c in crops) >= n:
            break
    return np.concatenate(crops)[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="ONNX model (default: the shipped one)")
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    ap.add_argument("--runs", type=int, default=300)
    args = ap.parse_args()
    clf = MaskClassifier(args.model, threads=args.threads, batch_size=64)
    s = clf.info.input_size
    crops = real_crops(clf, 64)
    source = "real faces from mask-scenes"
    if crops is None or len(crops) < 32:
        crops = np.random.default_rng(0).integers(0, 256, (64, s, s, 3), dtype=np.uint8)
        source = "random pixels"
    print(f"model: {clf.model_path.name} ({clf.info.backbone}, {s}x{s}), "
          f"{os.path.getsize(clf.model_path) / 1e6:.1f} MB; onnxruntime threads: {args.threads}; "
          f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"crops: {source}")
    print(f"{'batch':>5} | {'median ms/call':>14} | {'p95 ms/call':>11} | "
          f"{'median ms/face':>14} | {'p95 ms/face':>11}")
    rng = np.random.default_rng(1)
    for batch in (1, 4, 8, 16, 32):
        def call(batch=batch):
            idx = rng.integers(0, len(crops), batch)
            clf.predict_crops(crops[idx])
        runs = args.runs if batch <= 8 else max(args.runs // 4, 30)
        t = timeit(call, runs, warmup=20)
        print(f"{batch:>5} | {np.median(t):>14.2f} | {np.percentile(t, 95):>11.2f} | "
              f"{np.median(t) / batch:>14.3f} | {np.percentile(t, 95) / batch:>11.3f}")


if __name__ == "__main__":
    main()
