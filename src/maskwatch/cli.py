"""The ``maskwatch`` command line.

Thin by design: parse arguments, call the library, print results. Errors a user can
cause become one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from maskwatch import __version__
from maskwatch.config import DEFAULT_MAX_PIXELS, DEFAULT_MIN_LUMA, DEFAULT_RETENTION_DAYS

log = logging.getLogger("maskwatch")

EXIT_USAGE = 2


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit code 2."""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="log details (debug level)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")


def _add_masked_faces(p: argparse.ArgumentParser) -> None:
    """``--masked-faces``, the same for ``analyze`` and ``serve``."""
    p.add_argument("--masked-faces", choices=("student", "sface"), default="student",
                   help="with sface: what embeds faces wearing a mask (default student: the "
                   "shipped student of SFace, matched against SFace's templates, no re-enrolment; "
                   "sface: SFace itself)")


def _add_quality(p: argparse.ArgumentParser) -> None:
    """The quality rule's thresholds (``--min-luma`` ...), the same for ``analyze`` and
    ``serve``; None: :class:`~maskwatch.engine.EngineSettings`' defaults."""
    p.add_argument("--min-luma", type=float, default=None,
                   help="faces darker than this mean luma (0-255) are shown as 'cannot judge' "
                   f"instead of a mask state (default {DEFAULT_MIN_LUMA:g}; 0: off)")
    p.add_argument("--min-sharpness", type=float, default=None,
                   help="... and faces less sharp than this Laplacian variance (default 0: off)")
    p.add_argument("--min-face-size", type=float, default=None,
                   help="... and faces whose box's shorter side is under this many pixels "
                   "(default 0: off)")


def _quality_rule(args: argparse.Namespace) -> Any:
    """The :class:`~maskwatch.ops.quality.QualityRule` of the command line's thresholds,
    the engine's defaults for those not given."""
    from maskwatch.engine import EngineSettings

    return EngineSettings(**quality_settings(args)).quality_rule()


def quality_settings(args: argparse.Namespace) -> dict[str, float]:
    """The quality thresholds given on the command line, as EngineSettings fields."""
    out = {k: float(v) for k in ("min_luma", "min_sharpness", "min_face_size")
           if (v := getattr(args, k, None)) is not None}
    bad = [k for k, v in out.items() if not v >= 0]
    if bad:
        raise UserError(f"--{bad[0].replace('_', '-')} must be 0 (off) or more")
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskwatch",
        description="Find faces, tell whether each person wears a mask (properly, not at all, "
        "or below the nose), and train or evaluate the mask classifier.",
    )
    parser.add_argument("--version", action="version", version=f"maskwatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "analyze",
        help="analyse images, video, a camera or a stream; write annotated output and JSON lines",
        description="Detect faces, classify each one's mask state and track them in an image, a "
        "folder of images, a video file, a camera or an RTSP/HTTP stream. Writes annotated output "
        "(--out), JSON lines, one per frame (--json), and a summary.",
    )
    p.add_argument("input",
                   help="image, folder of images, video file, camera index (0) or rtsp/http URL")
    p.add_argument("--out",
                   help="annotated output: an image file for an image, a folder for a folder, "
                   "a .mp4/.avi file for video, camera or URL")
    p.add_argument("--json", help="write one JSON line per frame to this file ('-' for stdout)")
    p.add_argument("--show", action="store_true",
                   help="show the annotated frames in a window as they are analysed (q or Esc "
                   "stops; a key moves on to the next photo); needs an OpenCV build with windows "
                   "and a display")
    p.add_argument("--detector", choices=("yunet", "ssd"), default="yunet",
                   help="face detector (default yunet)")
    p.add_argument("--model", help="mask classifier ONNX file (default: the shipped model)")
    p.add_argument("--mode", choices=("live", "accurate"),
                   help="live: fast, tracked; accurate: upscaled detection for small faces "
                   "(default: accurate for images and folders, live for video)")
    p.add_argument("--no-track", action="store_true",
                   help="run every stage on every face of every frame")
    p.add_argument("--min-score", type=float, help="face detector confidence threshold (yunet)")
    _add_quality(p)
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="refuse images larger than this many pixels (default "
                   f"{DEFAULT_MAX_PIXELS // 10**6} M)")
    p.add_argument("--max-retries", type=int, default=None,
                   help="reconnection attempts for a camera or URL that drops (default: forever)")
    p.add_argument("--db",
                   help="recognise people from this gallery (SQLite path or mongodb://...); "
                   "'default' for the one in your data folder")
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="analyse a folder's photos on a Dask cluster: tcp://HOST:8786, or "
                   "local[:N] for N worker processes on this machine (needs the [cluster] "
                   "extra); the JSON lines are the same, in the same order")
    p.add_argument("--threshold", type=float, default=None,
                   help="recognition threshold (cosine, -1..1)")
    p.add_argument("--embedder", choices=("sface", "dlib"), default="sface",
                   help="face embedder for --db (default sface; dlib: dlib's ResNet from "
                   "face_recognition, needs the [dlib] extra); only templates enrolled with the "
                   "same embedder are matched")
    _add_masked_faces(p)
    _add_common(p)

    p = sub.add_parser(
        "train-embedder",
        help="distil a mask-invariant face embedder from SFace and write a run report",
        description="Train a student of SFace whose embedding of a masked face lands where SFace "
        "puts the same face unmasked (so it matches the templates SFace made). Reads lfw-train and "
        "mask-classification/without_mask from --datasets; caches crops and features in "
        "--out/cache and resumes from --out/checkpoint.pt when run again with the same settings. "
        "Writes student.onnx, report.md (with a model card), history.json, metadata.json and "
        "curves.png into --out.",
    )
    p.add_argument("--datasets", default="../shared/datasets", help="the shared datasets folder")
    p.add_argument("--out", required=True,
                   help="run folder (created; an earlier run there is resumed)")
    p.add_argument("--mask-templates",
                   help="MaskTheFace-style template folder (default: DATASETS/mask-templates "
                   "when present); the held-out families are never used")
    p.add_argument("--masks-per-face", type=int, default=5,
                   help="synthetic masks per photo (default 5)")
    p.add_argument("--below-nose", type=float, default=0.2,
                   help="share of masks below the nose (default 0.2)")
    p.add_argument("--cut-unit", type=int, default=24,
                   help="first of SFace's 27 Conv units that trains; the ones before are frozen "
                   "(default 24)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64,
                   help="faces per step (each masked and plain)")
    p.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate (cosine schedule)")
    p.add_argument("--plain-weight", type=float, default=0.5,
                   help="weight of the unmasked term of the loss")
    p.add_argument("--anchor-weight", type=float, default=0.0,
                   help="pull towards SFace's weights: weight of their squared relative change "
                   "(default 0)")
    p.add_argument("--train-head", action="store_true",
                   help="train the Gemm head too (default: the Conv units from --cut-unit only; "
                   "the head overfits: validation masked cosine 0.806 against 0.814 at 4 epochs)")
    p.add_argument("--limit", type=int, default=0, help="use at most this many photos (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="worker processes and torch threads")
    _add_common(p)

    p = sub.add_parser(
        "train",
        help="train the mask classifier by transfer learning and write a run report",
        description="Train a 3-class mask classifier (with_mask, without_mask, mask_incorrect) on "
        "any mix of sources. SOURCE is KIND:PATH with KIND folder (one folder per class), voc "
        "(PASCAL VOC scenes), synthetic (one folder per person; masks below and above the nose "
        "and covers that are not masks rendered from landmarks) or covered (the same folders, "
        "every face covered by a held-out cover that is not a mask: a check, for evaluate), "
        "or a bare path (voc if it has labels/ or Annotations/, else folder). Writes model.onnx, "
        "metrics.json, report.md, classification_report.txt, confusion_matrix.png and curves.png "
        "into --out.",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="data source, KIND:PATH or PATH")
    p.add_argument("--out", required=True, help="run folder to create (must be empty or absent)")
    p.add_argument("--backbone", default="efficientnet_lite0",
                   choices=("efficientnet_lite0", "mobilenet_v2", "resnet50"))
    p.add_argument("--head", default="pool", choices=("pool", "dense"),
                   help="pool: average pool + linear; dense: Flatten, Dense 1024 ReLU, Dropout 0.5")
    p.add_argument("--input-size", type=int, default=112,
                   help="classifier input side in pixels (default 112)")
    p.add_argument("--margin", type=float, default=0.15,
                   help="crop context per side, fraction of the face box")
    p.add_argument("--epochs", type=int, default=12,
                   help="cap on epochs (early stopping usually ends sooner)")
    p.add_argument("--patience", type=int, default=3,
                   help="epochs without improvement before stopping")
    p.add_argument("--min-delta", type=float, default=1e-3,
                   help="smallest val-loss decrease that counts")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of the head")
    p.add_argument("--backbone-lr-mult", type=float, default=0.1,
                   help="backbone learning rate = lr x this")
    p.add_argument("--freeze-blocks", type=int, default=0,
                   help="leading backbone modules to freeze")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--balance", default="class", choices=("class", "source", "none"),
                   help="sampling: equal mass per class (default); per class and spread over "
                   "sources by the square root of their counts; or uniform")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mask-templates",
                   help="folder of RGBA mask templates (MaskTheFace layout) for synthetic masks")
    p.add_argument("--max-per-source", type=int, default=0,
                   help="use at most this many faces per source (0 = all)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    _add_common(p)

    p = sub.add_parser(
        "evaluate",
        help="evaluate a mask classifier on datasets and write the same report as training",
        description="Run a mask classifier on folder, VOC, synthetic or covered sources (as for "
        "train) and "
        "write metrics.json, report.md, classification_report.txt and confusion_matrix.png. "
        "--split test evaluates the held-out split that train used with the same sources and seed.",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="data source, KIND:PATH or PATH")
    p.add_argument("--model", help="ONNX model (default: the shipped model)")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--split", default="all", choices=("train", "val", "test", "all"),
                   help="which split of the sources to evaluate (default all)")
    p.add_argument("--seed", type=int, default=0, help="split seed (as used in training)")
    p.add_argument("--mask-templates", help="mask templates folder, as given to train")
    p.add_argument("--max-per-source", type=int, default=0, help="as given to train (0 = all)")
    p.add_argument("--task", choices=("mask", "detection", "recognition", "tracking"),
                   default="mask",
                   help="mask: the mask classifier (default); detection: face detection recall and "
                   "precision by face size on VOC sources, live and accurate modes; recognition: "
                   "enrol the first --k photos of each person of an LFW-style folder and probe "
                   "with the rest, unmasked and masked; tracking: on a video, how often the "
                   "smoothed labels of tracked faces agree with the classifier run on every face "
                   "of every frame, how often labels flicker, and the labels shown by face "
                   "quality (see --truth, --min-luma)")
    p.add_argument("--truth", choices=("with_mask", "without_mask", "mask_incorrect"),
                   help="--task tracking: the mask state of every face in the video (e.g. "
                   "without_mask where nobody wears a mask): report how many shown labels are "
                   "wrong")
    p.add_argument("--k", type=int, default=2,
                   help="enrolment photos per person for --task recognition")
    p.add_argument("--probe-face-px", type=int, default=48,
                   help="also probe with faces scaled to about this width (small faces; 0 = off)")
    p.add_argument("--detector", choices=("yunet", "ssd", "hog"), default="yunet",
                   help="detector: yunet or ssd for --task detection; yunet or hog (dlib's HOG, "
                   "[dlib] extra) for --task recognition")
    p.add_argument("--embedder", default="sface", metavar="{sface,dlib,FILE.onnx}",
                   help="embedder for --task recognition (dlib: dlib's ResNet from "
                   "face_recognition, [dlib] extra); an .onnx file: a student embedder with "
                   "SFace's interface, evaluated beside SFace on the same faces")
    _add_quality(p)
    _add_common(p)

    people = sub.add_parser(
        "people",
        help="enrol, list, rename, remove, export and import the people maskwatch recognises",
        description="Manage the gallery of known people. Only face embeddings are stored (plus "
        "synthetic masked versions for recognition under masks); photos are kept only with "
        "--thumbnail. --db picks the store: a SQLite file (default: in your data folder) or "
        "mongodb://host:port/db.",
    )
    for name, q in _add_actions(people, "people_command", (
        ("add", "enrol a person from one or more photos"),
        ("import", "enrol everyone in DIR (one sub-folder of photos per person)"),
        ("list", "list people with template counts"),
        ("rename", "rename a person"),
        ("remove", "delete a person and all their templates"),
        ("export", "write the gallery (embeddings, no photos) to a JSON-lines file"),
        ("load", "read a file written by export"),
    )):
        if name == "add":
            q.add_argument("name")
            q.add_argument("photos", nargs="+", metavar="PHOTO")
        elif name == "import":
            q.add_argument("folder")
        elif name == "rename":
            q.add_argument("old")
            q.add_argument("new")
        elif name == "remove":
            q.add_argument("name")
        elif name in ("export", "load"):
            q.add_argument("file")
        if name in ("add", "import"):
            q.add_argument("--largest", action="store_true",
                           help="in a photo with several faces, enrol the largest")
            q.add_argument("--masks", type=int, default=4,
                           help="synthetic masked templates per photo (default 4)")
            q.add_argument("--thumbnail", action="store_true",
                           help="keep a small face thumbnail (off by default)")
            q.add_argument("--add", action="store_true",
                           help="add the photos to an existing person")
            q.add_argument("--embedder", choices=("sface", "dlib"), default="sface",
                           help="face embedder of the templates (default sface; dlib: dlib's "
                           "ResNet, needs the [dlib] extra); recognition uses only templates of "
                           "its own embedder")
        if name == "load":
            q.add_argument("--replace", action="store_true",
                           help="replace people who already exist")

    _add_events_parser(sub)

    p = sub.add_parser(
        "bench",
        help="measure per-stage latency and end-to-end frames per second on this CPU",
        description="Per-stage latency (detect, classify, embed) and end-to-end throughput on "
        "640x480 frames with 1, 3 and 10 faces, tracked and every-frame, median and p95, peak "
        "memory, and the baseline (res10 SSD + MobileNetV2-224 classifier on every face) side by "
        "side. Frames are composed from LFW faces in the shared datasets.",
    )
    p.add_argument("--datasets", default=None,
                   help="shared datasets folder (default ../shared/datasets)")
    p.add_argument("--frames", type=int, default=90, help="measured frames per configuration")
    p.add_argument("--faces", default="1,3,10", help="comma-separated faces per frame")
    p.add_argument("--threads", type=int, default=None,
                   help="onnxruntime threads for the classifier")
    p.add_argument("--json", help="also write the figures to this JSON file")
    _add_common(p)

    p = sub.add_parser(
        "serve",
        help="run the web app: live camera page, people, events dashboard, REST API",
        description="Start the web app (FastAPI on uvicorn) and print the URL to open. The live "
        "page analyses this browser's camera; --source adds cameras, video files or RTSP/HTTP URLs "
        "read on the server and shown as MJPEG streams. Changing people, events or sources needs "
        "the admin password: set MASKWATCH_ADMIN_PASSWORD, or one is generated and printed at the "
        "first start.",
    )
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--db", help="gallery and events store: SQLite path or mongodb://host:port/db "
                   "(default: gallery.sqlite3 in your data folder)")
    p.add_argument("--source", action="append", default=[], metavar="SOURCE",
                   help="server-side camera index, video file or rtsp/http URL (repeatable)")
    p.add_argument("--retention-days", type=float, default=DEFAULT_RETENTION_DAYS,
                   help=f"delete events older than this (default {DEFAULT_RETENTION_DAYS:g})")
    p.add_argument("--max-upload-mb", type=float, default=10.0,
                   help="largest accepted upload, MB (default 10)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"largest accepted image, pixels (default {DEFAULT_MAX_PIXELS // 10**6} M)")
    p.add_argument("--embedder", choices=("sface", "dlib"), default="sface",
                   help="face embedder for recognition and enrolment (default sface; dlib: dlib's "
                   "ResNet, needs the [dlib] extra); people enrolled with another embedder are not "
                   "recognised")
    _add_masked_faces(p)
    _add_quality(p)
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="run the server sources on a Dask cluster, one task per source on its "
                   "workers: tcp://HOST:8786 (a running `dask scheduler`), or local[:N] for N "
                   "worker processes on this machine (needs the [cluster] extra). Give the "
                   "workers a shared gallery with --db mongodb://...")
    p.add_argument("--private", action=argparse.BooleanOptionalAction, default=None,
                   help="watching (live page, streams, /api/analyze) needs the admin login too; "
                   "default: private when --host is not a loopback address, open on this machine "
                   "only")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a name clients use for this server, accepted in the Host header besides "
                   "localhost, 127.0.0.1, [::1] and --host (repeatable; any port; '*' accepts any "
                   "name). Others are refused, which stops DNS rebinding; give the server's LAN "
                   "name or address with --host 0.0.0.0")
    _add_common(p)
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _sources(texts: list[str]) -> list[Any]:
    from maskwatch.train.data import SourceSpec, check_source

    specs = [SourceSpec.parse(t) for t in texts]
    for s in specs:
        check_source(s)
    return specs


def _open_window(title: str) -> str:
    """Open the ``--show`` window, or fail with what to do instead."""
    import cv2

    instead = "or watch in the browser: maskwatch serve --source INPUT"
    has_display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if sys.platform.startswith("linux") and not has_display:
        raise UserError("--show needs a display (DISPLAY is not set); write the annotated video "
                        f"with --out {instead}")
    try:
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)
    except cv2.error as exc:
        raise UserError("--show needs an OpenCV build with windows, and this one has none "
                        "(opencv-python-headless); write the annotated video with --out "
                        f"{instead}") from exc
    return title


def _engine_settings(args: argparse.Namespace) -> Any:
    """The :class:`~maskwatch.engine.EngineSettings` that ``analyze``'s options describe."""
    from maskwatch.engine import EngineSettings

    mode = {"accurate": "photo", "live": "live", None: "auto"}[args.mode]
    return EngineSettings(mode=mode, track=not args.no_track, detector=args.detector,
                          min_score=args.min_score, classifier=args.model, db=args.db,
                          embedder=args.embedder, masked_faces=args.masked_faces,
                          threshold=args.threshold, masked_threshold=args.threshold,
                          max_pixels=args.max_pixels, max_retries=args.max_retries,
                          **quality_settings(args))


class _AnalysisOutput:
    """Where ``maskwatch analyze`` puts what the engine found: annotated images or a
    video (--out), a window (--show), JSON lines (--json), and the closing summary."""

    def __init__(self, args: argparse.Namespace, kind: str, fps: float | None) -> None:
        import cv2

        from maskwatch.draw import FaceAnnotator
        from maskwatch.types import SHOWN_MASK_STATES

        self.cv2 = cv2
        self.photos = kind in ("image", "folder")
        self.kind = kind
        self.fps = fps
        self.out = Path(args.out) if args.out else None
        if self.out and kind == "folder":
            self.out.mkdir(parents=True, exist_ok=True)
        video_suffixes = (".mp4", ".avi", ".mkv", ".mov")
        if self.out and not self.photos and self.out.suffix.lower() not in video_suffixes:
            raise UserError(f"{self.out}: video output needs a .mp4, .avi, .mkv or .mov file name")
        self.window = _open_window(f"maskwatch: {args.input}") if args.show else None
        self.json_file = None
        if args.json:
            self.json_file = (sys.stdout if args.json == "-"
                              else open(args.json, "w"))  # noqa: SIM115
        self.annotator = FaceAnnotator()
        self.writer: Any = None
        self.frames = self.faces = self.problems = 0
        self.counts = dict.fromkeys(SHOWN_MASK_STATES, 0)
        self.tracks: set[int] = set()

    def problem(self, item: Any) -> None:
        self.problems += 1
        print(f"maskwatch: skipped {item.name or item.source}: {item.message}", file=sys.stderr)

    def add(self, result: Any) -> bool:
        """Take one frame's result; False when the user stopped from the window."""
        self.frames += 1
        self.faces += len(result.faces)
        for lab in result.faces.mask_labels:
            if lab in self.counts:
                self.counts[lab] += 1
        self.tracks.update(int(t) for t in result.faces.track_ids if t >= 0)
        if self.out is not None or self.window is not None:
            drawn = self.annotator.annotate(result.image, result)
            if self.window is not None:
                self.cv2.imshow(self.window, drawn)
                if self.cv2.waitKey(0 if self.photos else 1) & 0xFF in (ord("q"), 27):
                    print("maskwatch: stopped from the window", file=sys.stderr)
                    return False
            if self.out is not None:
                self._write(result, drawn)
        if self.json_file:
            self.json_file.write(json.dumps(result.to_dict()) + "\n")
        return True

    def add_record(self, record: dict[str, Any]) -> None:
        """Take one photo's engine JSON, analysed elsewhere (a cluster worker)."""
        self.frames += 1
        self.faces += len(record["faces"])
        for face in record["faces"]:
            if face.get("mask") in self.counts:
                self.counts[face["mask"]] += 1
        if self.json_file:
            self.json_file.write(json.dumps(record) + "\n")

    def _write(self, result: Any, drawn: Any) -> None:
        cv2 = self.cv2
        assert self.out is not None
        if self.photos:
            dest = self.out
            if self.kind == "folder":
                stem = Path(result.name).with_suffix("")
                dest = self.out / f"{str(stem).replace('/', '_')}_annotated.jpg"
            if not cv2.imwrite(str(dest), drawn):
                raise UserError(f"{dest}: cannot write "
                                "(unknown image extension or unwritable folder)")
            return
        if self.writer is None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            codec = "mp4v" if self.out.suffix.lower() in (".mp4", ".mov") else "MJPG"
            fourcc = cv2.VideoWriter_fourcc(*codec)
            self.writer = cv2.VideoWriter(str(self.out), fourcc, self.fps or 25.0,
                                          (drawn.shape[1], drawn.shape[0]))
            if not self.writer.isOpened():
                raise UserError(f"{self.out}: cannot write video")
        self.writer.write(drawn)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
        if self.window is not None:
            self.cv2.destroyAllWindows()
        if self.json_file and self.json_file is not sys.stdout:
            self.json_file.close()

    def summary(self, elapsed: float) -> str:
        from maskwatch.types import MASK_CLASSES

        counts, frames = self.counts, self.frames
        # faces shown as cannot judge (quality rule, contested) are counted apart
        classified = sum(counts[k] for k in MASK_CLASSES)
        compliance = (f", {100 * counts['with_mask'] / classified:.0f}% of faces wear a mask "
                      "properly" if classified else "")
        unjudged = f", {counts['unknown']} cannot be judged" if counts["unknown"] else ""
        tracks = f" in {len(self.tracks)} track(s)" if self.tracks else ""
        return (f"{frames} frame(s), {self.faces} face(s){tracks}: {counts['with_mask']} with "
                f"mask, {counts['without_mask']} without, {counts['mask_incorrect']} below the "
                f"nose{unjudged}{compliance}; {frames / max(elapsed, 1e-9):.1f} frames/s"
                + (f"; {self.problems} unreadable" if self.problems else "")
                + (f"; annotated output in {self.out}" if self.out else ""))


def _events_summary(engine: Any) -> None:
    """What became of the run's events (after the engine closed)."""
    events = engine.events
    if events is None:
        return
    print(f"maskwatch: {events.written} event(s) recorded in {engine.gallery.location}",
          file=sys.stderr)
    if events.spooled:
        print(f"maskwatch: the store cannot be reached; {events.spooled} event(s) are kept in "
              f"{events.spool.path} until the next `maskwatch analyze --db` or `maskwatch "
              "serve` with this store writes them", file=sys.stderr)
    if events.lost:
        print(f"maskwatch: {events.lost} event(s) could not be recorded (see the log above)",
              file=sys.stderr)


def cmd_analyze(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from maskwatch.sources import SourceError, open_source

    settings = _engine_settings(args)
    try:
        source = open_source(args.input, max_pixels=args.max_pixels, max_retries=args.max_retries)
    except SourceError as exc:
        raise UserError(str(exc)) from exc
    if args.cluster:
        return _analyze_on_cluster(args, settings, source)
    try:
        output = _AnalysisOutput(args, source.kind, source.fps)
        engine = _engine(settings)
    except BaseException:
        source.close()
        raise
    started = time.perf_counter()
    bar = tqdm(total=source.frame_count, desc="analyze", unit="frame",
               disable=args.quiet or (source.frame_count or 0) < 2)
    try:
        results = engine.run(source, on_problem=lambda item: (output.problem(item), bar.update(1)))
        try:
            for result in results:
                bar.update(1)
                if not output.add(result):
                    break
        except KeyboardInterrupt:
            print("maskwatch: interrupted; writing what was analysed", file=sys.stderr)
        finally:
            results.close()  # ends the tracks (events) and closes the source
    finally:
        bar.close()
        source.close()
        engine.close()
        output.close()
    _events_summary(engine)
    print(output.summary(time.perf_counter() - started), file=sys.stderr)
    if output.frames == 0:
        raise UserError("no readable frames")
    return 0


def _analyze_on_cluster(args: argparse.Namespace, settings: Any, source: Any) -> int:
    """``analyze FOLDER --cluster ADDRESS``: the photos analysed by the cluster's workers
    (:mod:`maskwatch.cluster`), the JSON lines and summary written here."""
    from tqdm import tqdm

    from maskwatch.cluster import analyze_photos, check_address, cluster_client
    from maskwatch.errors import ClusterError
    from maskwatch.sources import SourceProblem

    try:
        try:
            check_address(args.cluster)
        except ClusterError as exc:
            raise UserError(str(exc)) from exc
        if source.kind != "folder":
            raise UserError("--cluster analyses a folder of photos; video, cameras and streams "
                            "run on one machine for now")
        if args.out or args.show:
            raise UserError("--cluster writes JSON lines (--json) and the summary; "
                            "--out and --show need the photos here: run without --cluster")
        root = Path(args.input)
        names = [f.relative_to(root).as_posix() for f in source.files]
    finally:
        source.close()
    output = _AnalysisOutput(args, "folder", None)
    started = time.perf_counter()
    bar = tqdm(total=len(names), desc="analyze", unit="photo", disable=args.quiet)
    try:
        with cluster_client(args.cluster) as client:
            for record in analyze_photos(client, settings, source.source, root, names):
                bar.update(1)
                if "problem" in record:
                    output.problem(SourceProblem(source=record["source"], name=record["name"],
                                                 message=record["problem"]))
                else:
                    output.add_record(record)
    except ClusterError as exc:
        raise UserError(str(exc)) from exc
    finally:
        bar.close()
        output.close()
    print(output.summary(time.perf_counter() - started), file=sys.stderr)
    if output.frames == 0:
        raise UserError("no readable frames")
    return 0


def _engine(settings: Any) -> Any:
    """An :class:`~maskwatch.engine.Engine`; errors a user can act on become UserError."""
    from maskwatch.engine import Engine
    from maskwatch.gallery import GalleryError
    from maskwatch.models.dlib_embedder import DlibUnavailable

    try:
        return Engine(settings)
    except (DlibUnavailable, GalleryError) as exc:
        raise UserError(str(exc)) from exc


def cmd_train_embedder(args: argparse.Namespace) -> int:
    try:
        from maskwatch.train.embedder import EmbedderTrainConfig, train_embedder
    except ImportError as exc:
        raise UserError(f"training needs the [train] extra ({exc.name} missing): pip install "
                        "'maskwatch[train]'") from exc
    datasets = Path(args.datasets)
    if not datasets.is_dir():
        raise UserError(f"{datasets}: no such folder")
    templates = Path(args.mask_templates) if args.mask_templates else datasets / "mask-templates"
    if args.mask_templates and not templates.is_dir():
        raise UserError(f"{templates}: no such folder")
    if not 0.0 <= args.below_nose <= 1.0:
        raise UserError("--below-nose must be between 0 and 1")
    for name in ("masks_per_face", "epochs", "batch_size", "threads"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    config = EmbedderTrainConfig(
        datasets=datasets, out=Path(args.out),
        mask_templates=templates if templates.is_dir() else None,
        masks_per_face=args.masks_per_face, below_nose=args.below_nose, cut_unit=args.cut_unit,
        epochs=args.epochs, batch=args.batch_size, lr=args.lr, plain_weight=args.plain_weight,
        anchor_weight=args.anchor_weight, train_head=args.train_head,
        limit=args.limit, seed=args.seed, threads=args.threads, progress=not args.quiet,
    )
    try:
        res = train_embedder(config)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    b, base = res["best"], res["teacher_on_validation"]
    print(f"best epoch {b['epoch']}: validation masked rank-1 {100 * b['val_masked_rank1']:.2f}% "
          f"(SFace {100 * base['val_masked_rank1']:.2f}%), masked cos {b['val_masked_cos']:.4f} "
          f"(SFace {base['val_masked_cos']:.4f})")
    print(f"student: {Path(args.out) / 'student.onnx'}; report: {Path(args.out) / 'report.md'}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    try:
        from maskwatch.train.trainer import TrainConfig, train
    except ImportError as exc:
        raise UserError(f"training needs the [train] extra ({exc.name} missing): pip install "
                        "'maskwatch[train]'") from exc
    specs = _sources(args.sources)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: exists and is not an empty folder; choose a new --out")
    templates = Path(args.mask_templates) if args.mask_templates else None
    if templates is not None and not templates.is_dir():
        raise UserError(f"{templates}: no such folder")
    config = TrainConfig(
        sources=specs, out_dir=out, backbone=args.backbone, head=args.head,
        input_size=args.input_size, margin=args.margin, epochs=args.epochs,
        patience=args.patience, min_delta=args.min_delta, lr=args.lr,
        backbone_lr_mult=args.backbone_lr_mult, freeze_blocks=args.freeze_blocks,
        batch_size=args.batch_size, balance=args.balance,
        seed=args.seed, templates_dir=templates, max_per_source=args.max_per_source,
        threads=args.threads, progress=not args.quiet,
    )
    from maskwatch.train.backbones import BackboneUnavailable

    try:
        metrics = train(config)
    except BackboneUnavailable as exc:
        raise UserError(str(exc)) from exc
    print(_summary_line(metrics, out))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.task == "detection":
        return _evaluate_detection(args)
    if args.task == "tracking":
        return _evaluate_tracking(args)
    if args.task == "recognition":
        return _evaluate_recognition(args)
    try:
        from maskwatch.evaluate.mask import evaluate_dataset
    except ImportError as exc:
        raise UserError(f"evaluation needs the [train] extra ({exc.name} missing): pip install "
                        "'maskwatch[train]'") from exc
    specs = _sources(args.sources)
    if args.model and not Path(args.model).is_file():
        raise UserError(f"{args.model}: no such model file")
    templates = Path(args.mask_templates) if args.mask_templates else None
    metrics = evaluate_dataset(
        args.model, specs, args.out, split=args.split, seed=args.seed, templates_dir=templates,
        progress=not args.quiet, max_per_source=args.max_per_source, rule=_quality_rule(args),
    )
    print(_summary_line(metrics, Path(args.out)))
    return 0


def cmd_people(args: argparse.Namespace) -> int:
    from maskwatch.gallery import open_gallery

    action = args.people_command
    if not action:
        raise UserError("choose an action: add, import, list, rename, remove, export or load")
    gallery = open_gallery(args.db)
    engine = None
    try:
        if action == "list":
            people = gallery.list_people()
            if not people:
                print("no people enrolled")
            for person in people:
                print(f"{person.name}\t{person.templates} templates ({person.synthetic_templates} "
                      "with synthetic masks)")
        elif action in ("add", "import"):
            from maskwatch.engine import EngineSettings
            from maskwatch.ops.image import list_images

            if action == "add":
                jobs = [(args.name, [Path(p) for p in args.photos])]
            else:
                root = Path(args.folder)
                if not root.is_dir():
                    raise UserError(f"{root}: no such folder")
                jobs = [(d.name, list_images(d)) for d in sorted(root.iterdir()) if d.is_dir()]
                jobs = [(n, ph) for n, ph in jobs if ph]
                if not jobs:
                    raise UserError(f"{root}: expected one sub-folder of photos per person")
            # Templates are always the embedder's own (SFace's, not the student's).
            engine = _engine(EngineSettings(db=args.db or "default", embedder=args.embedder,
                                            masked_faces="sface", events=False))
            gallery.close()
            gallery = engine.gallery
            failures = 0
            for name, photos in jobs:
                try:
                    res = engine.enrol(name, photos, pick_largest=args.largest,
                                       synthetic_masks=args.masks, thumbnail=args.thumbnail,
                                       add_to_existing=args.add)
                except Exception as exc:
                    if action == "add" or not _is_user_error(exc):
                        raise
                    failures += 1
                    print(f"maskwatch people import: skipped {name}: {exc}", file=sys.stderr)
                    continue
                print(f"{'enrolled' if res.created else 'updated'} {res.person.name}: {res.photos} "
                      f"photo(s), {res.templates} templates ({res.synthetic_templates} with "
                      "synthetic masks)")
            if action == "import" and failures == len(jobs):
                raise UserError("nobody could be enrolled")
        elif action == "rename":
            person = gallery.rename(args.old, args.new)
            print(f"renamed {args.old} to {person.name}")
        elif action == "remove":
            n = gallery.remove_person(args.name)
            print(f"removed {args.name} and {n} templates")
        elif action == "export":
            n = gallery.export(args.file)
            print(f"exported {n} people to {args.file}")
        elif action == "load":
            n = gallery.import_(args.file, replace=args.replace)
            print(f"imported {n} people from {args.file}")
    finally:
        if engine is not None:
            engine.close()  # its gallery too
        else:
            gallery.close()
    return 0


def _add_actions(group: argparse.ArgumentParser, dest: str,
                 actions: tuple[tuple[str, str], ...]) -> list[tuple[str, argparse.ArgumentParser]]:
    """The ACTION sub-commands of a command group (people, events), each with ``--db`` and
    the common options; returns ``(name, parser)`` pairs for their own arguments."""
    sub = group.add_subparsers(dest=dest, metavar="ACTION")
    group.set_defaults(group_actions=sub.choices)  # a group without an action lists them
    out = []
    for name, help_text in actions:
        q = sub.add_parser(name, help=help_text, description=help_text)
        q.add_argument("--db", help="gallery: SQLite path or mongodb://host:port/db "
                       "(default: user data folder)")
        _add_common(q)
        out.append((name, q))
    return out


def _add_events_parser(sub: Any) -> None:
    ev = sub.add_parser(
        "events",
        help="list, export, purge and summarise recorded events (one per face track)",
        description="An event is one face track from appearance to end: time, source, mask state "
        "over its life, identity or unknown, best similarity. analyze --db (video, camera, stream) "
        "and the web app record them in the gallery's store. --since/--until take an ISO date or "
        "time (2024-05-01, 2024-05-01T10:30; local time unless a zone is given), a duration ago "
        "(24h, 7d) or Unix seconds; an event's time is when it ended.",
    )
    for name, q in _add_actions(ev, "events_command", (
        ("list", "list events, newest first"),
        ("export", "write events to a CSV file"),
        ("purge", "delete events older than the retention period"),
        ("stats", "mask compliance, people seen and unknown faces, in total and per time bucket"),
    )):
        if name == "export":
            q.add_argument("file", help="CSV file to write")
        if name != "purge":
            q.add_argument("--since", help="from this time (inclusive)")
            q.add_argument("--until", help="before this time")
            q.add_argument("--source", help="only this source (e.g. camera:0, file:clip.mp4)")
        if name in ("list", "export"):
            q.add_argument("--identity", help="only this person ('' for unknown faces)")
            q.add_argument("--unknown", action="store_true", help="only unknown faces")
            q.add_argument("--mask",
                           choices=("with_mask", "without_mask", "mask_incorrect", "unknown",
                                    "unclassified"),
                           help="only this mask state (unknown: the face could not be judged; "
                           "unclassified: never classified)")
        if name == "list":
            q.add_argument("--limit", type=int, default=50,
                           help="events to show (1-1000, default 50)")
            q.add_argument("--offset", type=int, default=0, help="events to skip")
            q.add_argument("--json", action="store_true", help="one JSON object per line")
        if name == "purge":
            q.add_argument("--older-than-days", type=float, default=DEFAULT_RETENTION_DAYS,
                           help="delete events that ended more than this many days ago (default "
                           f"{DEFAULT_RETENTION_DAYS:g})")
        if name == "stats":
            q.add_argument("--bucket", default="1h",
                           help="bucket width: 15m, 1h, 1d... (default 1h)")


def cmd_events(args: argparse.Namespace) -> int:
    from maskwatch.events import UNKNOWN, events_to_csv, parse_duration, parse_time
    from maskwatch.gallery import open_gallery

    action = args.events_command
    if not action:
        raise UserError("choose an action: list, export, purge or stats")
    filters: dict[str, Any] = {}
    try:
        for key in ("since", "until"):
            if getattr(args, key, None):
                filters[key] = parse_time(getattr(args, key))
        bucket_s = parse_duration(args.bucket) if action == "stats" else 0.0
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    if getattr(args, "source", None):
        filters["source"] = args.source
    if getattr(args, "unknown", False):
        filters["identity"] = UNKNOWN
    elif getattr(args, "identity", None) is not None:
        filters["identity"] = args.identity
    if getattr(args, "mask", None):
        filters["mask_state"] = args.mask

    def when(t: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))

    gallery = open_gallery(args.db)
    try:
        if action == "list":
            page, total = gallery.query_events(**filters, limit=args.limit, offset=args.offset)
            for e in page:
                if args.json:
                    print(json.dumps(e.to_dict(), ensure_ascii=False))
                    continue
                who = e.identity or "unknown"
                sim = f" ({e.best_similarity:.2f})" if e.best_similarity is not None else ""
                # "cannot judge", not "unknown": that word is the identity's here
                state = {None: "unclassified", "unknown": "cannot judge"}.get(e.mask_state,
                                                                             e.mask_state)
                print(f"{when(e.ended)}\t{e.duration:.1f} s\t{e.source}\t{who}{sim}\t"
                      f"{state}\t{e.frames} frames")
            shown = f"{args.offset + 1}-{args.offset + len(page)}" if page else "none"
            print(f"{shown} of {total} event(s)", file=sys.stderr)
        elif action == "export":
            n = events_to_csv(gallery.iter_events(**filters), args.file)
            print(f"exported {n} event(s) to {args.file}")
        elif action == "purge":
            days = args.older_than_days
            if not days >= 0:
                raise UserError(f"--older-than-days must be 0 or more, got {days}")
            n = gallery.purge_events(time.time() - days * 86400.0)
            print(f"deleted {n} event(s) older than {days:g} days")
        elif action == "stats":
            # buckets on local hours/days
            midnight = time.mktime(time.localtime()[:3] + (0, 0, 0, 0, 0, -1))
            s = gallery.event_stats(**filters, bucket_s=bucket_s, bucket_origin=midnight)
            comp = (f"{100 * s['compliance']:.0f}% of classified wear a mask properly"
                    if s["compliance"] is not None else "none classified")
            print(f"{s['total']} event(s): {comp}; {s['unknown']} unknown; {len(s['people_seen'])} "
                  f"{'person' if len(s['people_seen']) == 1 else 'people'} seen")
            if s["people_seen"]:
                print("people seen: " + ", ".join(f"{n} {c}" for n, c in s["people_seen"].items()))
            unjudged = s["by_mask"].get("unknown", 0)  # faces shown as cannot judge
            print("by mask: " + ", ".join(f"{k} {v}" for k, v in s["by_mask"].items()
                                          if k != "unknown")
                  + (f", cannot judge {unjudged}" if unjudged else "")
                  + f", unclassified {s['unclassified']}")
            for b in s["buckets"]:
                c = f"{100 * b['compliance']:.0f}%" if b["compliance"] is not None else "-"
                print(f"{when(b['start'])}\t{b['total']} events\twith {b['with_mask']}\twithout "
                      f"{b['without_mask']}\tbelow nose {b['mask_incorrect']}"
                      + (f"\tcannot judge {b['unknown']}" if b.get("unknown") else "")
                      + f"\tcompliance {c}")
    finally:
        gallery.close()
    return 0


def _is_user_error(exc: Exception) -> bool:
    from maskwatch.gallery import GalleryError
    from maskwatch.ops.image import ImageError

    return isinstance(exc, (GalleryError, ImageError, FileNotFoundError))


def cmd_bench(args: argparse.Namespace) -> int:
    from maskwatch.bench import run_bench

    root = Path(args.datasets) if args.datasets else Path.cwd().parent / "shared" / "datasets"
    if not root.is_dir():
        raise UserError(f"{root}: datasets folder not found (use --datasets)")
    try:
        counts = tuple(int(x) for x in args.faces.split(",") if x.strip())
    except ValueError as exc:
        raise UserError(f"--faces: expected numbers like 1,3,10, got {args.faces!r}") from exc
    results = run_bench(root, frames=args.frames, face_counts=counts, threads=args.threads)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from maskwatch.web import WebSettings, serve
    except ImportError as exc:  # pragma: no cover - the web deps are core dependencies
        raise UserError(f"the web app needs {exc.name}: pip install maskwatch") from exc
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: expected 0 to 65535")
    if args.retention_days <= 0 or args.max_upload_mb <= 0 or args.max_pixels <= 0:
        raise UserError("--retention-days, --max-upload-mb and --max-pixels must be positive")
    import ipaddress
    import re

    # a host name or IPv4 address: letters, digits, dots and dashes; or an IPv6 address
    host_name = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}")
    for name in args.allowed_host:
        try:
            ipaddress.IPv6Address(name.strip("[]"))
            continue
        except ValueError:
            pass
        if name != "*" and not host_name.fullmatch(name):
            raise UserError(f"--allowed-host {name!r}: give a host name or address such as "
                            "camera.lan, 192.168.1.20 or [fe80::1], without scheme, port or path "
                            "(any port is accepted)")
    if args.embedder == "dlib":
        from maskwatch.models.dlib_embedder import DlibUnavailable, load_face_recognition

        try:
            load_face_recognition()
        except DlibUnavailable as exc:
            raise UserError(str(exc)) from exc
    if args.cluster:
        from maskwatch.cluster import _dask, check_address, local_workers
        from maskwatch.errors import ClusterError

        try:
            args.cluster = check_address(args.cluster)
            _dask()
        except ClusterError as exc:
            raise UserError(str(exc)) from exc
        if local_workers(args.cluster) is None and not (args.db or "").startswith("mongodb"):
            logging.getLogger("maskwatch.serve").warning(
                "--cluster %s without --db mongodb://...: each worker machine uses its own "
                "gallery and events (people added here reach only workers on this machine)",
                args.cluster)
    settings = WebSettings(host=args.host, port=args.port, db=args.db, sources=list(args.source),
                           retention_days=args.retention_days,
                           max_upload_bytes=int(args.max_upload_mb * 2**20),
                           max_pixels=args.max_pixels, private=args.private, embedder=args.embedder,
                           masked_faces=args.masked_faces,
                           allowed_hosts=list(args.allowed_host), cluster=args.cluster,
                           quality=quality_settings(args))
    if args.host in ("0.0.0.0", "::") and not args.allowed_host:
        logging.getLogger("maskwatch.serve").warning(
            "listening on every interface, but only localhost names are accepted in the Host "
            "header: add --allowed-host NAME for each name or address clients use to reach this "
            "machine")
    serve(settings, log_level="debug" if args.verbose else "warning" if args.quiet else "info")
    return 0


def _evaluation_student(embedder: str) -> Any:
    """The student embedder that ``--embedder FILE.onnx`` names, loaded and checked to
    be comparable with SFace; None for ``sface`` and ``dlib``."""
    from maskwatch.evaluate.recognition import check_student
    from maskwatch.models.embedder import EMBEDDERS, SFACE_NAME, create_embedder, is_embedder_file

    if not is_embedder_file(embedder):
        if embedder not in EMBEDDERS:
            raise UserError(f"--embedder {embedder!r}: choose {', '.join(EMBEDDERS)} "
                            "or an .onnx file")
        return None
    try:
        student = create_embedder(embedder)  # FileNotFoundError: reported as it is
        check_student(student, SFACE_NAME)
    except (ValueError, ImportError) as exc:
        raise UserError(str(exc)) from exc
    return student


def _evaluate_recognition(args: argparse.Namespace) -> int:
    from maskwatch.evaluate.recognition import evaluate_recognition, summary_lines
    from maskwatch.models.dlib_embedder import DlibUnavailable, load_face_recognition

    student = _evaluation_student(args.embedder)
    embedder = "sface" if student is not None else args.embedder
    if len(args.sources) != 1:
        raise UserError("recognition takes one folder with one sub-folder of photos per person")
    if args.detector not in ("yunet", "hog"):
        raise UserError("recognition needs a detector that gives landmarks: "
                        "--detector yunet or hog")
    if embedder == "dlib" or args.detector == "hog":
        try:
            load_face_recognition()
        except DlibUnavailable as exc:
            raise UserError(str(exc)) from exc
    first = args.sources[0]
    root = Path(first.split(":", 1)[1] if first.startswith("synthetic:") else first)
    if not root.is_dir() or not any(d.is_dir() for d in root.iterdir()):
        raise UserError(f"{root}: expected one sub-folder of photos per person (LFW layout)")
    res = evaluate_recognition(
        root, args.out, k=args.k, seed=args.seed, probe_face_px=args.probe_face_px or None,
        mask_templates=args.mask_templates, progress=not args.quiet,
        limit_people=args.max_per_source, embedder=embedder, detector=args.detector,
        student=student,
    )
    for line in summary_lines(res):
        print(line)
    print(f"report: {Path(args.out) / 'recognition.md'}")
    return 0


def _evaluate_tracking(args: argparse.Namespace) -> int:
    from maskwatch.evaluate.tracking import evaluate_tracking
    from maskwatch.sources import SourceError

    if len(args.sources) != 1:
        raise UserError("--task tracking takes one video file")
    if args.model and not Path(args.model).is_file():
        raise UserError(f"{args.model}: no such model file")
    try:
        res = evaluate_tracking(args.sources[0], args.out, progress=not args.quiet,
                                truth=args.truth, model=args.model, quality=_quality_rule(args))
    except SourceError as exc:
        raise UserError(str(exc)) from exc
    print(f"{res['face_frames']} face-frames in {res['tracks']} tracks: smoothed labels agree with "
          f"the per-frame classifier on {100 * (res['agreement'] or 0):.1f}% "
          f"({100 * (res['agreement_confident'] or 0):.1f}% where it is confident); single-frame "
          f"flickers {res['flickers_shown']} (per-frame: {res['flickers_per_frame']}); "
          f"{res['classifier_calls']} classifier calls")
    judged = res["judged_face_frames"]
    contested = res.get("unknown_contested", 0)
    print(f"shown: {res['unknown_face_frames']} cannot be judged "
          f"({100 * (res['unknown_share'] or 0):.1f}% of face-frames"
          + (f"; {contested} of them contested" if contested else "") + f"); of {judged} judged, "
          f"{res['shown_says_mask']} say a mask ({100 * (res['shown_says_mask_share'] or 0):.1f}%)"
          + (f", {res['shown_wrong']} are not {res['truth']} "
             f"({100 * (res['shown_wrong_share'] or 0):.1f}%)" if res["truth"] else ""))
    print(f"report: {Path(args.out) / 'tracking.md'}")
    return 0


def _evaluate_detection(args: argparse.Namespace) -> int:
    from maskwatch.evaluate.detection import evaluate_detection

    if args.detector not in ("yunet", "ssd"):
        raise UserError(f"--task detection evaluates yunet or ssd, not {args.detector}")
    specs = _sources(args.sources)
    bad = [s for s in specs if s.kind != "voc"]
    if bad:
        raise UserError(f"{bad[0].path}: detection needs labelled boxes (a voc: source)")
    for spec in specs:
        out = Path(args.out) if len(specs) == 1 else Path(args.out) / spec.path.name
        res = evaluate_detection(spec.path, out, detector=args.detector, progress=not args.quiet)
        for mode, m in res["modes"].items():
            print(f"{spec.name} {mode}: recall (faces >= 16 px) "
                  f"{100 * (m['recall_16_plus'] or 0):.1f}%, precision "
                  f"{100 * (m['precision'] or 0):.1f}% ({100 * (m['precision_16_plus'] or 0):.1f}% "
                  f"for detections >= 16 px), {m['ms_per_scene_median']:.0f} ms per scene")
        print(f"report: {out / 'detection.md'}")
    return 0


def _summary_line(metrics: dict[str, Any], out: Path) -> str:
    lines = [f"{metrics.get('n', 0)} faces: 3-class accuracy "
             f"{100 * (metrics.get('accuracy') or 0):.2f}%, 2-class "
             f"{100 * (metrics.get('two_class_accuracy') or 0):.2f}%, macro-F1 "
             f"{metrics.get('macro_f1') or 0:.3f}"]
    for src, h in metrics.get("by_source", {}).items():
        lines.append(f"  {src}: {h['n']} faces, 3-class {100 * h['accuracy']:.2f}%, 2-class "
                     f"{100 * h['two_class_accuracy']:.2f}%, macro-F1 {h['macro_f1']:.3f}")
    if "judged" in metrics:
        j = metrics["judged"]
        lines.append(f"quality rule: {metrics['unknown_n']} faces cannot be judged "
                     f"({100 * (metrics['unknown_share'] or 0):.2f}%); on the {j['n']} judged: "
                     f"3-class {100 * (j['accuracy'] or 0):.2f}%, 2-class "
                     f"{100 * (j['two_class_accuracy'] or 0):.2f}%")
    lines.append(f"report: {out / 'report.md'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    actions = getattr(args, "group_actions", None)
    if actions is not None and not getattr(args, f"{args.command}_command", None):
        actions = ", ".join(actions)
        print(f"maskwatch {args.command}: error: choose an action: {actions} "
              f"(see maskwatch {args.command} --help)", file=sys.stderr)
        return EXIT_USAGE
    _setup_logging(args)
    from maskwatch.ops.image import ImageError

    handlers = {"analyze": cmd_analyze, "train": cmd_train,
                "train-embedder": cmd_train_embedder, "evaluate": cmd_evaluate, "bench": cmd_bench,
                "people": cmd_people, "serve": cmd_serve, "events": cmd_events}
    from maskwatch.gallery import GalleryError
    from maskwatch.train.data import DataError  # numpy/OpenCV only: no [train] extra needed

    try:
        return handlers[args.command](args)
    except (UserError, DataError, ImageError, GalleryError, FileNotFoundError,
            FileExistsError) as exc:
        print(f"maskwatch {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("maskwatch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
