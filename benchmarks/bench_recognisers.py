"""Per-call time of the face detectors and embedders used for recognition, side by side.

On LFW photos (250x250, one centred face) from the shared datasets: median and p95
milliseconds of one detection (YuNet; dlib's HOG detector, upsampled once as
face_recognition does) and of one face embedding (SFace; dlib ResNet), each on the
same photos and faces, one after the other in one process.

    python benchmarks/bench_recognisers.py [--photos 60] [--datasets ../shared/datasets]

dlib's parts need the [dlib] extra; they are skipped with a note when it is missing.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("bench_recognisers")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=60)
    ap.add_argument("--datasets",
                    default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from maskwatch.models.detector import create_detector
    from maskwatch.models.dlib_embedder import DlibUnavailable
    from maskwatch.models.embedder import create_embedder
    from maskwatch.ops.image import read_image

    root = Path(args.datasets) / "lfw-identities" / "images"
    files = sorted(root.rglob("*.jpg"))
    files = files[:: max(1, len(files) // args.photos)][: args.photos]
    images = [read_image(f) for f in files]
    yunet = create_detector("yunet")
    faces = [yunet.detect(im) for im in images]
    faces = [f[int(np.argmax(f.widths * f.heights))] if len(f) else f for f in faces]
    log.info("%s, Python %s, %d CPUs; %d LFW photos", platform.processor() or platform.machine(),
             platform.python_version(), os.cpu_count() or 0, len(images))

    def report(name: str, times: list[float]) -> None:
        t = np.array(times) * 1e3
        log.info("%-28s median %7.1f ms  p95 %7.1f ms  (%d calls)", name, np.median(t),
                 np.percentile(t, 95), len(t))

    for det_name in ("yunet", "hog"):
        try:
            det = create_detector(det_name)
        except DlibUnavailable as exc:
            log.info("%-28s skipped: %s", f"detect ({det_name})", exc)
            continue
        det.detect(images[0])
        times = []
        for im in images:
            t0 = time.perf_counter()
            det.detect(im)
            times.append(time.perf_counter() - t0)
        report(f"detect ({det_name})", times)
    for emb_name in ("sface", "dlib"):
        try:
            emb = create_embedder(emb_name)
        except DlibUnavailable as exc:
            log.info("%-28s skipped: %s", f"embed one face ({emb_name})", exc)
            continue
        emb.embed(images[0], faces[0])
        times = []
        for im, f in zip(images, faces, strict=True):
            if len(f):
                t0 = time.perf_counter()
                emb.embed(im, f)
                times.append(time.perf_counter() - t0)
        report(f"embed one face ({emb_name})", times)


if __name__ == "__main__":
    main()
