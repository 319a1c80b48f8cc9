"""Cluster benchmark: how many live video sources ``maskwatch serve --cluster`` holds.

What it measures (maskwatch issue 13). Each source is a 640x480, 15 frames/s video file
read in real time (as a camera delivers it) by a :func:`maskwatch.cluster.run_source`
task on a worker of a ``local:W`` Dask cluster, with the full live engine: detection,
tracking, mask state and recognition against a gallery whose people appear in the
videos, one event per ended track (recorded in the gallery's SQLite store). The
sources are run exactly as the web app runs them, through
:class:`~maskwatch.web.cluster_sources.ClusterLink` and
:class:`~maskwatch.web.cluster_sources.ClusterSource` (no web server: the reader
threads that would feed the page are the ones measured here).

How. The videos are made in a temp dir: the shared ``short_hamilton_clip.mp4``
(640x360, 30 fps) decimated to 15 fps and letterboxed to 640x480 (faces keep their
shape), and sequences of 1, 2 and 3 LFW faces (every other one masked) drifting, as
``maskwatch bench`` composes them; each is looped back and forth to last the whole run.
Source k plays file k % 4. The gallery enrols the LFW people of the composed frames
(their photo in the frames and two more of theirs) and Lin-Manuel Miranda and Alex
Lacamoire (in the clip). For each worker count W and source count N the script starts
the cluster, starts N sources, waits until every one has sent a frame, warms up, then
measures over a window:

- frames received per source per second (frames counted at the start and end of the
  window / elapsed), and frames the worker read per second (the video's frame index);
- end-to-end latency (frame read on the worker to message received here) p50/p95 over
  every frame of the window;
- frames dropped: read and analysed by the worker but not sent because the source's
  queue (one message) was still full: frame-index gaps in the window, and the task's
  own ``dropped`` count over its whole run (after stop);
- resident memory of each worker process (peak of samples taken every few seconds,
  through ``client.run``) and of this process (scheduler and readers);
- CPU: cores used by each worker process and by this process, and the machine's busy
  and niced shares (``/proc/stat`` delta over the window, all cores).

By default each worker process is pinned to one core of its own (``--pin``;
``sched_setaffinity`` on all its threads before its engine is built) and its models run
one thread each (``--threads 1``): the "held to one core" of the target. ``--no-pin``
lets the operating system spread a worker's threads (video decoding, JPEG encoding
and the model calls, which take turns under one lock) over every core.

Targets (issue 13): 8 sources at >= 14 frames/s each with tracking, mask state and
recognition (about 120 frames/s in all); with each worker held to one core, 2 workers
hold >= 1.6x the sources of 1 worker at the same frame rate. The summary gives, for each
W, the capacity (the largest N whose every source held >= 14 frames/s; "+" when the
largest N tried held, so the capacity is at least that), the 2-worker / 1-worker
capacity ratio and whether 8 sources held.

    python benchmarks/bench_cluster.py                      # W 1,2 x N 2,4,6,8 (~7 min)
    python benchmarks/bench_cluster.py --workers 1 --sources 1 --seconds 5   # a smoke run

Writes the table to docs/results/cluster-bench.txt (``--out``) and the figures, with
the machine and the settings, to docs/results/cluster-bench.json (``--json``). Run it
on a quiet machine: every other process takes cores from the workers.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]

#: Size and frame rate of every source.
FRAME_W, FRAME_H, FPS = 640, 480, 15
#: Frames per second a source must receive to count as held.
HOLD_FPS = 14.0
#: Sources that must be held at once (issue 13).
TARGET_SOURCES = 8
#: Capacity of 2 workers over that of 1 worker (issue 13).
TARGET_RATIO = 1.6
#: Faces in each composed sequence (the other file is the Hamilton clip).
FACE_COUNTS = (1, 2, 3)
#: Frames composed per sequence before it is looped back and forth.
COMPOSED_FRAMES = 150
#: Seconds between samples of the sources (latencies, identities) in the window.
POLL_S = 0.25
#: Seconds between samples of the workers' memory.
MEMORY_EVERY_S = 5.0
#: Seconds any call to the cluster (``client.run``, closing) may take.
CALL_TIMEOUT_S = 30.0


# -- the videos and the gallery --------------------------------------------------------


def ping_pong(count: int, total: int) -> Iterator[int]:
    """Indices 0..count-1 forward, back, forward ... (``total`` of them): a loop without a
    jump, so the tracker sees people move, not teleport."""
    period = max(1, 2 * count - 2)
    for t in range(total):
        k = t % period
        yield k if k < count else period - k


def letterbox(frame: np.ndarray) -> np.ndarray:
    """``frame`` scaled to fit 640x480 without changing its shape, padded with black."""
    h, w = frame.shape[:2]
    scale = min(FRAME_W / w, FRAME_H / h)
    nw, nh = round(w * scale), round(h * scale)
    out = np.zeros((FRAME_H, FRAME_W, 3), np.uint8)
    x, y = (FRAME_W - nw) // 2, (FRAME_H - nh) // 2
    out[y:y + nh, x:x + nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA)
    return out


def clip_frames(clip: Path) -> list[np.ndarray]:
    """The frames of ``clip`` at :data:`FPS` (every frame whose time reaches the next
    1/FPS step), letterboxed to 640x480."""
    cap = cv2.VideoCapture(str(clip))
    if not cap.isOpened():
        raise SystemExit(f"{clip}: cannot open")
    src_fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    frames, index, kept = [], 0, 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if index * FPS / src_fps >= kept:
                frames.append(letterbox(frame))
                kept += 1
            index += 1
    finally:
        cap.release()
    if not frames:
        raise SystemExit(f"{clip}: no frames")
    return frames


def write_video(path: Path, frames: list[np.ndarray], total: int) -> None:
    """``total`` frames of ``frames`` looped back and forth, as an mp4v file at :data:`FPS`."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (FRAME_W, FRAME_H))
    if not writer.isOpened():
        raise SystemExit(f"{path}: OpenCV cannot write mp4v here")
    try:
        for k in ping_pong(len(frames), total):
            writer.write(frames[k])
    finally:
        writer.release()


def composed_photos(lfw: Path, n_faces: int, seed: int) -> list[Path]:
    """The LFW photos :func:`maskwatch.bench.compose_sequence` puts in its frames for
    ``n_faces`` and ``seed`` (it draws them first from its generator; every other one,
    starting with the second, gets a mask)."""
    from maskwatch.ops.image import list_images

    files = list_images(lfw)
    picks = np.random.default_rng(seed).choice(len(files), n_faces, replace=False)
    return [files[int(i)] for i in picks]


def make_videos(datasets: Path, out: Path, seconds: float) -> list[Path]:
    """The four source files (clip, 1, 2 and 3 faces), each ``seconds`` long."""
    from maskwatch.bench import compose_sequence

    total = int(seconds * FPS)
    clip = out / "hamilton-640x480-15fps.mp4"
    write_video(clip, clip_frames(datasets / "videos" / "short_hamilton_clip.mp4"), total)
    videos = [clip]
    for n in FACE_COUNTS:
        path = out / f"faces{n}-640x480-15fps.mp4"
        seq = compose_sequence(datasets / "lfw-identities" / "images", n, COMPOSED_FRAMES, seed=n)
        write_video(path, seq, total)
        del seq
        videos.append(path)
    return videos


def make_gallery(datasets: Path, db: Path) -> dict[str, list[str]]:
    """Enrol the people of the videos in a new SQLite gallery ``db``; their photos by name."""
    from maskwatch import Engine
    from maskwatch.errors import GalleryError

    lfw = datasets / "lfw-identities" / "images"
    people: dict[str, list[Path]] = {}
    for n in FACE_COUNTS:
        for photo in composed_photos(lfw, n, seed=n):
            others = sorted(p for p in photo.parent.iterdir() if p != photo)[:2]
            people.setdefault(photo.parent.name, [photo, *others])
    examples = datasets / "identity-examples" / "examples"
    for name in ("lin-manuel-miranda", "alex-lacamoire"):
        if (examples / f"{name}.png").is_file():
            people[name.replace("-", "_")] = [examples / f"{name}.png"]
    enrolled: dict[str, list[str]] = {}
    with Engine(db=str(db), threads=1) as engine:
        for name, photos in people.items():
            try:
                engine.enrol(name, [str(p) for p in photos], pick_largest=True)
                enrolled[name] = [str(p.relative_to(datasets)) for p in photos]
            except GalleryError as exc:
                print(f"  not enrolled: {name}: {exc}")
    return enrolled


def prepare(datasets: Path, tmp: Path, video_s: float) -> tuple[list[Path], dict[str, list[str]]]:
    """The videos and the gallery, made in a process of their own (see :func:`main`)."""
    return make_videos(datasets, tmp, video_s), make_gallery(datasets, tmp / "gallery.sqlite3")


# -- on the workers (sent by client.run) -----------------------------------------------


def pin_this_process(core: int) -> list[int]:
    """On a worker: every thread of this process (and so every thread it starts later)
    on ``core`` only; the cores it may use now."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), {core})
        except OSError:  # the thread ended meanwhile
            pass
    return sorted(os.sched_getaffinity(0))


def process_stats() -> dict[str, Any]:
    """On a worker (or here): pid, resident MB, CPU seconds, threads, cores allowed."""
    import psutil

    proc = psutil.Process()
    times = proc.cpu_times()
    return {"pid": os.getpid(), "rss_mb": proc.memory_info().rss / 2**20,
            "cpu_s": times.user + times.system, "threads": proc.num_threads(),
            "cores": sorted(os.sched_getaffinity(0))}


# -- one configuration -----------------------------------------------------------------


def bounded(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    """``fn()``, or TimeoutError after ``timeout`` seconds (the call is left to finish on
    a daemon thread)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name=f"bench-{what}")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"{what} took more than {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def cpu_ticks() -> tuple[int, int, int]:
    """(total, idle + iowait, nice) jiffies of all cores, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + fields[4], fields[1]


class SourceWindow:
    """What one source did in the measuring window."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.frames0 = source.frames
        self.index0 = self.frame_index()
        self.seen = self.frames0
        self.latencies: list[float] = []
        self.identities: set[str] = set()

    def frame_index(self) -> int:
        latest = self.source.latest or {}
        return int(latest.get("frame", -1))

    def poll(self) -> None:
        """Take the latencies of the frames received since the last poll, and the names
        recognised in the latest one."""
        frames = self.source.frames
        latest = self.source.latest or {}
        recent = list(self.source.latencies)
        new = frames - self.seen
        if new > 0 and recent:
            self.latencies.extend(recent[-min(new, len(recent)):])
        self.seen = frames
        for face in latest.get("faces", []):
            if face.get("identity"):
                self.identities.add(face["identity"])

    def close(self, elapsed: float) -> dict[str, Any]:
        received = self.source.frames - self.frames0
        read = max(received, self.frame_index() - self.index0)
        return {"fps": received / elapsed, "read_fps": read / elapsed,
                "dropped": read - received, "state": self.source.info().state,
                "worker": self.source.worker}


def percentile_ms(values: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values) * 1e3, q)) if values else None


def run_config(workers: int, n_sources: int, videos: list[Path], settings: Any,
               args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    """Start a ``local:workers`` cluster and ``n_sources`` sources, measure, stop, close."""
    from maskwatch.web.cluster_sources import ClusterLink, ClusterSource

    run: dict[str, Any] = {"workers": workers, "sources": n_sources, "ok": False,
                           "error": None}
    link = None
    sources: list[Any] = []
    started = time.monotonic()
    try:
        link = ClusterLink(f"local:{workers}", settings)
        client = link.client
        client.wait_for_workers(workers, timeout=60)
        addresses = sorted(client.scheduler_info()["workers"])
        if args.pin:
            allowed = sorted(os.sched_getaffinity(0))
            run["pinned"] = {}
            for k, address in enumerate(addresses):
                core = allowed[k % len(allowed)]
                got = bounded(lambda a=address, c=core: client.run(pin_this_process, c,
                                                                   workers=[a]),
                              CALL_TIMEOUT_S, "pinning")
                run["pinned"][address] = got[address]
        sources = [ClusterSource(f"s{k}", str(videos[k % len(videos)]), link,
                                 f"file:{videos[k % len(videos)].name}#s{k}")
                   for k in range(n_sources)]
        deadline = time.monotonic() + args.start_timeout
        while not all(s.frames > 0 for s in sources):
            failed = [s for s in sources if s.state in ("failed", "finished", "stopped")]
            if failed:
                raise RuntimeError(f"source {failed[0].id} {failed[0].state}: "
                                   f"{failed[0].message}")
            if time.monotonic() > deadline:
                waiting = sum(1 for s in sources if s.frames == 0)
                raise TimeoutError(f"{waiting} of {n_sources} sources sent no frame within "
                                   f"{args.start_timeout:g} s")
            time.sleep(0.2)
        run["start_s"] = round(time.monotonic() - started, 1)
        time.sleep(args.warmup)

        def worker_stats() -> dict[str, dict[str, Any]]:
            return bounded(lambda: client.run(process_stats), CALL_TIMEOUT_S, "worker stats")

        stats0, here0, ticks0 = worker_stats(), process_stats(), cpu_ticks()
        peak_rss = {a: s["rss_mb"] for a, s in stats0.items()}
        windows = [SourceWindow(s) for s in sources]
        t0 = time.monotonic()
        next_memory = t0 + MEMORY_EVERY_S
        while (now := time.monotonic()) < t0 + args.seconds:
            for w in windows:
                w.poll()
            if now >= next_memory:
                for a, s in worker_stats().items():
                    peak_rss[a] = max(peak_rss.get(a, 0.0), s["rss_mb"])
                next_memory = now + MEMORY_EVERY_S
            time.sleep(POLL_S)
        for w in windows:
            w.poll()
        elapsed = time.monotonic() - t0
        per_source = [w.close(elapsed) for w in windows]
        stats1, here1, ticks1 = worker_stats(), process_stats(), cpu_ticks()
        for a, s in stats1.items():
            peak_rss[a] = max(peak_rss.get(a, 0.0), s["rss_mb"])
        latencies = [x for w in windows for x in w.latencies]
        fps = [p["fps"] for p in per_source]
        total, idle, nice = (b - a for a, b in zip(ticks0, ticks1, strict=True))
        run.update({
            "window_s": round(elapsed, 2),
            "fps_each": [round(x, 2) for x in fps],
            "fps_min": min(fps), "fps_mean": statistics.fmean(fps), "fps_total": sum(fps),
            "read_fps_min": min(p["read_fps"] for p in per_source),
            "held": all(x >= HOLD_FPS for x in fps),
            "p50_ms": percentile_ms(latencies, 50), "p95_ms": percentile_ms(latencies, 95),
            "latency_frames": len(latencies),
            "dropped_window": sum(p["dropped"] for p in per_source),
            "states_at_end": sorted({p["state"] for p in per_source}),
            "sources_per_worker": {a: sum(1 for p in per_source if p["worker"] == a)
                                   for a in addresses},
            "worker_rss_mb": {a: round(v) for a, v in peak_rss.items()},
            "worker_cores_used": {a: round((stats1[a]["cpu_s"] - stats0[a]["cpu_s"]) / elapsed,
                                           2) for a in stats1 if a in stats0},
            "worker_threads": {a: s["threads"] for a, s in stats1.items()},
            "main_rss_mb": round(here1["rss_mb"]),
            "main_cores_used": round((here1["cpu_s"] - here0["cpu_s"]) / elapsed, 2),
            "cpu_busy_pct": round(100 * (total - idle) / total, 1) if total else None,
            "cpu_nice_pct": round(100 * nice / total, 1) if total else None,
            "identities_seen": sorted(set().union(*(w.identities for w in windows))),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        })
        if run["states_at_end"] != ["live"]:
            run["error"] = f"not every source was live at the end: {run['states_at_end']}"
        else:
            run["ok"] = True
    except Exception as exc:  # noqa: BLE001 - reported, the benchmark goes on
        run["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        run.update(stop_sources(sources))
        if link is not None:
            try:
                bounded(link.close, 60.0, "closing the cluster")
            except Exception as exc:  # noqa: BLE001
                run["close_error"] = f"{type(exc).__name__}: {exc}"
    log(format_run(run))
    return run


def stop_sources(sources: list[Any]) -> dict[str, Any]:
    """Stop every source at once; what their tasks said they did over their whole run."""
    if not sources:
        return {}
    with ThreadPoolExecutor(max_workers=len(sources)) as pool:
        futures = [pool.submit(s.stop, 10.0) for s in sources]
        for future in futures:
            try:
                future.result(timeout=CALL_TIMEOUT_S)
            except (FutureTimeout, Exception):  # noqa: BLE001 - counted below
                pass
    summaries = [s.summary for s in sources if s.summary]
    return {"task_summaries": len(summaries),
            "task_frames": sum(int(s.get("frames", 0)) for s in summaries),
            "task_sent": sum(int(s.get("sent", 0)) for s in summaries),
            "task_dropped": sum(int(s.get("dropped", 0)) for s in summaries),
            "task_tracks": sum(int(s.get("tracks", 0)) for s in summaries),
            "task_events": sum(int(s.get("events", 0)) for s in summaries)}


# -- the report ------------------------------------------------------------------------

HEADER = (f"{'W':>2} {'N':>2}  {'fps/src min':>11} {'mean':>5} {'total':>6} {'read min':>8}  "
          f"{'p50 ms':>7} {'p95 ms':>7}  {'drop win':>8} {'drop all':>8}  "
          f"{'MB/worker':>10} {'cores/worker':>12} {'main':>5} {'busy%':>5}  held")


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_run(run: dict[str, Any]) -> str:
    """One line of the table (and the reason, for a configuration that failed)."""
    head = f"{run['workers']:>2} {run['sources']:>2}"
    if "fps_min" not in run:
        return f"{head}  FAILED: {run['error']}"
    mem = "/".join(str(v) for v in run["worker_rss_mb"].values())
    cores = "/".join(f"{v:.2f}" for v in run["worker_cores_used"].values())
    line = (f"{head}  {run['fps_min']:>11.1f} {run['fps_mean']:>5.1f} {run['fps_total']:>6.1f} "
            f"{run['read_fps_min']:>8.1f}  {_fmt(run['p50_ms'], '7.0f')} "
            f"{_fmt(run['p95_ms'], '7.0f')}  {run['dropped_window']:>8} "
            f"{run.get('task_dropped', '-'):>8}  {mem:>10} {cores:>12} "
            f"{run['main_cores_used']:>5.2f} {_fmt(run['cpu_busy_pct'], '5.0f')}  "
            f"{'yes' if run['held'] else 'no'}")
    if run["error"]:
        line += f"  ({run['error']})"
    return line


def summarise(runs: list[dict[str, Any]], workers: list[int],
              sources: list[int]) -> dict[str, Any]:
    """Capacity per worker count, the 2/1 ratio and the 8-source target."""
    capacity: dict[int, int] = {}
    capped: dict[int, bool] = {}
    for w in workers:
        held = [r["sources"] for r in runs
                if r["workers"] == w and r["ok"] and r["held"]]
        capacity[w] = max(held, default=0)
        capped[w] = bool(held) and capacity[w] == max(sources)
    out: dict[str, Any] = {"hold_fps": HOLD_FPS,
                           "capacity": {str(w): capacity[w] for w in workers},
                           "capacity_is_lower_bound": {str(w): capped[w] for w in workers}}
    if 1 in capacity and 2 in capacity and capacity[1] > 0:
        out["ratio_2_over_1"] = capacity[2] / capacity[1]
        out["ratio_is_lower_bound"] = capped[2] and not capped[1]
        out["ratio_unknown"] = capped[1]
        out["ratio_target_met"] = (not capped[1]) and out["ratio_2_over_1"] >= TARGET_RATIO
    eight = {str(r["workers"]): bool(r["ok"] and r["held"]) for r in runs
             if r["sources"] == TARGET_SOURCES}
    if eight:
        out[f"held_{TARGET_SOURCES}_sources"] = eight
        out["fps_total_at_8"] = {str(r["workers"]): round(r.get("fps_total", 0.0), 1)
                                 for r in runs if r["sources"] == TARGET_SOURCES}
    return out


def summary_lines(summary: dict[str, Any]) -> list[str]:
    lines = []
    for w, cap in summary["capacity"].items():
        plus = "+" if summary["capacity_is_lower_bound"][w] else ""
        lines.append(f"capacity, {w} worker(s): {cap}{plus} sources held >= {HOLD_FPS:g} "
                     f"frames/s each" + (" (the most tried; it may hold more)" if plus else ""))
    if "ratio_2_over_1" in summary:
        if summary["ratio_unknown"]:
            lines.append("2-worker / 1-worker capacity: unknown (1 worker held every N tried; "
                         "try larger --sources)")
        else:
            bound = ">= " if summary["ratio_is_lower_bound"] else ""
            lines.append(f"2-worker / 1-worker capacity: {bound}{summary['ratio_2_over_1']:.2f} "
                         f"(target >= {TARGET_RATIO}): "
                         f"{'met' if summary['ratio_target_met'] else 'NOT met'}")
    elif "1" in summary["capacity"] and "2" in summary["capacity"]:
        lines.append("2-worker / 1-worker capacity: n/a (1 worker held no N tried)")
    held8 = summary.get(f"held_{TARGET_SOURCES}_sources")
    if held8:
        for w, ok in held8.items():
            lines.append(f"{TARGET_SOURCES} sources >= {HOLD_FPS:g} frames/s each on {w} "
                         f"worker(s) (target): {'met' if ok else 'NOT met'} "
                         f"({summary['fps_total_at_8'][w]} frames/s in all)")
    else:
        lines.append(f"{TARGET_SOURCES} sources were not tried (--sources)")
    return lines


def machine_info() -> dict[str, Any]:
    import dask
    import distributed
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "cores_allowed": len(os.sched_getaffinity(0)),
            "python": platform.python_version(), "dask": dask.__version__,
            "distributed": distributed.__version__, "opencv": cv2.__version__,
            "onnxruntime": onnxruntime.__version__,
            "load_average_before": [round(x, 2) for x in os.getloadavg()]}


def int_list(text: str) -> list[int]:
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers, comma-separated")
    return values


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default=str(REPO.parent / "shared" / "datasets"))
    ap.add_argument("--workers", type=int_list, default=[1, 2],
                    help="worker counts W, comma-separated (default 1,2)")
    ap.add_argument("--sources", type=int_list, default=[2, 4, 6, 8],
                    help="source counts N, comma-separated (default 2,4,6,8)")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads of each model in a worker (default 1)")
    ap.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                    help="pin each worker process to one core of its own (default on)")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds measured per run")
    ap.add_argument("--start-timeout", type=float, default=90.0,
                    help="seconds for every source to send its first frame")
    ap.add_argument("--out", default=str(REPO / "docs" / "results" / "cluster-bench.txt"))
    ap.add_argument("--json", default=str(REPO / "docs" / "results" / "cluster-bench.json"))
    args = ap.parse_args()
    datasets = Path(args.datasets)
    for need in ("lfw-identities/images", "videos/short_hamilton_clip.mp4"):
        if not (datasets / need).exists():
            raise SystemExit(f"{datasets / need}: not found (--datasets)")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("distributed").setLevel(logging.ERROR)
    # another Dask process on this machine holds the default dashboard port: not our concern
    warnings.filterwarnings("ignore", message="Port 8787 is already in use")
    from maskwatch.engine import EngineSettings

    lines: list[str] = []

    def log(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="maskwatch-cluster-bench-") as tmp_name:
        tmp = Path(tmp_name)
        # long enough for start-up, warm-up and the window, however slow the start
        video_s = max(40.0, args.warmup + args.seconds + 30.0)
        t = time.monotonic()
        # in a child process: the models and frames it loads stay out of this process,
        # whose memory is measured (it holds the scheduler and the sources' readers)
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            videos, enrolled = pool.submit(prepare, datasets, tmp, video_s).result(timeout=900)
        prep_s = time.monotonic() - t
        settings = EngineSettings(mode="live", db=str(tmp / "gallery.sqlite3"),
                                  threads=args.threads, events=True,
                                  spool=str(tmp / "pending-events.jsonl"))
        log(f"maskwatch cluster benchmark: {len(videos)} files of {FRAME_W}x{FRAME_H} at "
            f"{FPS} frames/s ({video_s:.0f} s each; {', '.join(v.name for v in videos)}), "
            f"source k plays file k % {len(videos)}; gallery of {len(enrolled)} people "
            f"({', '.join(enrolled)}); prepared in {prep_s:.0f} s")
        log(f"machine: {machine['cpu']}, {machine['cores']} cores; python {machine['python']}, "
            f"dask {machine['dask']}, distributed {machine['distributed']}; load average "
            f"before {machine['load_average_before']}")
        log(f"live engine (tracking, mask state, recognition, events), model threads "
            f"{args.threads}, workers {'pinned to one core each' if args.pin else 'not pinned'}; "
            f"warm-up {args.warmup:g} s, window {args.seconds:g} s; held = every source "
            f">= {HOLD_FPS:g} frames/s received")
        log("fps/src: frames received per source per second; read: frames the worker read "
            "per second; p50/p95: read on worker -> received here; drop win: read but not "
            "sent in the window; drop all: the tasks' own count over their run; cores: "
            "CPU cores used (worker processes, this process)")
        log(HEADER)
        runs = []
        for w in args.workers:
            for n in args.sources:
                runs.append(run_config(w, n, videos, settings, args, log))
                time.sleep(2.0)  # let the last cluster's processes go
    summary = summarise(runs, args.workers, args.sources)
    for line in summary_lines(summary):
        log(line)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    settings_out = {"fps": FPS, "size": [FRAME_W, FRAME_H], "video_s": video_s,
                    "files": [v.name for v in videos], "gallery": enrolled,
                    "threads": args.threads, "pin": args.pin, "warmup_s": args.warmup,
                    "seconds": args.seconds, "workers": args.workers, "sources": args.sources,
                    "hold_fps": HOLD_FPS}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"machine": machine, "settings": settings_out,
                                           "runs": runs, "summary": summary}, indent=1) + "\n")
    print(f"wrote {args.out} and {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
