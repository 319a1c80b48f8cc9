"""\
Milliseconds per face of SFace in its backends (OpenVINO, onnxruntime, OpenCV), 1 and 2 threads.

On LFW photos (250x250, one centred face) from the shared datasets, faces found by
YuNet beforehand: the time of ``SFaceEmbedder.embed`` (alignment included) for one
face per call, and per face when ``--group`` faces go in one call (OpenVINO and
onnxruntime run them as one batch, OpenCV one by one). The configurations take turns
photo by photo, so that other work on the machine slows them alike; also printed: the
load time of each embedder and the least cosine between the backends' embeddings. The
masked-face student (``--student``, default the shipped one) is timed beside SFace in
OpenVINO and onnxruntime: it is SFace's graph with other weights, so it should cost
the same.

    python benchmarks/bench_embedder.py [--photos 60] [--rounds 3] [--group 6]
                                        [--student FILE|none]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger("bench_embedder")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3,
                    help="passes over the photos per configuration")
    ap.add_argument("--group", type=int, default=6,
                    help="faces per call in the batched measurement")
    ap.add_argument("--student", default=None,
                    help="student .onnx to time too (default: the shipped one; "
                    "'none': SFace only)")
    ap.add_argument("--datasets",
                    default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from maskwatch.models.detector import create_detector
    from maskwatch.models.embedder import SFaceEmbedder, masked_student_path
    from maskwatch.ops.image import read_image
    from maskwatch.types import Faces

    root = Path(args.datasets) / "lfw-identities" / "images"
    files = sorted(root.rglob("*.jpg"))
    files = files[:: max(1, len(files) // args.photos)][: args.photos]
    yunet = create_detector("yunet")
    pairs = []
    for f in files:
        image = read_image(f)
        faces = yunet.detect(image)
        if len(faces):
            pairs.append((image, faces[int(np.argmax(faces.widths * faces.heights))]))
    # --group faces in one call: that many photos side by side in one image
    group = [(im, f) for im, f in pairs if im.shape[0] == pairs[0][0].shape[0]][: args.group]
    offsets = np.cumsum([0] + [im.shape[1] for im, _ in group[:-1]]).astype(np.float32)
    wide = np.concatenate([im for im, _ in group], axis=1)
    group_faces = Faces(
        boxes=np.concatenate([f.boxes + [dx, 0, dx, 0]
                              for (_, f), dx in zip(group, offsets, strict=True)]),
        scores=np.concatenate([f.scores for _, f in group]),
        landmarks=np.concatenate([f.landmarks + [dx, 0]
                                  for (_, f), dx in zip(group, offsets, strict=True)]))
    with open("/proc/loadavg") as fh:
        load = fh.read().split()[:3]
    log.info("%s, Python %s, %d CPUs, load average %s; %d LFW faces, %d rounds",
             platform.processor() or platform.machine(), platform.python_version(),
             os.cpu_count() or 0, " ".join(load), len(pairs), args.rounds)

    student = (None if args.student == "none"
               else Path(args.student) if args.student else masked_student_path())
    configs = [(b, t) for b in ("openvino", "onnxruntime", "opencv") for t in (1, 2)]
    if student is not None and student.is_file():
        configs += [(f"student-{b}", t) for b in ("openvino", "onnxruntime") for t in (1, 2)]
    embedders = {}
    for backend, threads in configs:
        cv2.setNumThreads(threads)
        t0 = time.perf_counter()
        if backend.startswith("student-"):
            embedders[backend, threads] = SFaceEmbedder(model_path=student, backend=backend[8:],
                                                        threads=threads)
        else:
            embedders[backend, threads] = SFaceEmbedder(backend=backend, threads=threads)
        log.info("load %-19s %d thread(s): %6.0f ms", backend, threads,
                 (time.perf_counter() - t0) * 1e3)

    ref = [embedders["opencv", 1].embed(im, f) for im, f in pairs]
    for backend in ("openvino", "onnxruntime"):
        least = min(float((embedders[backend, 2].embed(im, f) * r).sum())
                    for (im, f), r in zip(pairs, ref, strict=True))
        log.info("least cosine %s vs opencv over %d faces: %.7f", backend, len(pairs), least)

    one: dict[tuple[str, int], list[float]] = {c: [] for c in configs}
    many: dict[tuple[str, int], list[float]] = {c: [] for c in configs}
    for c in configs:  # warm-up
        cv2.setNumThreads(c[1])
        for im, f in pairs[:5]:
            embedders[c].embed(im, f)
    for _ in range(args.rounds):
        for image, face in pairs:
            for c in configs:
                cv2.setNumThreads(c[1])
                t0 = time.perf_counter()
                embedders[c].embed(image, face)
                one[c].append(time.perf_counter() - t0)
        for _ in range(10):
            for c in configs:
                cv2.setNumThreads(c[1])
                t0 = time.perf_counter()
                embedders[c].embed(wide, group_faces)
                many[c].append((time.perf_counter() - t0) / len(group_faces))

    def stats(times: list[float]) -> str:
        t = np.array(times) * 1e3
        return f"median {np.median(t):5.1f}  p95 {np.percentile(t, 95):5.1f}"

    log.info("ms per face (alignment included)     one face per call        %d faces per call",
             len(group_faces))
    for c in configs:
        log.info("%-19s %d thread(s)       %s     %s", c[0], c[1], stats(one[c]), stats(many[c]))
    with open("/proc/loadavg") as fh:
        log.info("load average after: %s", " ".join(fh.read().split()[:3]))


if __name__ == "__main__":
    main()
