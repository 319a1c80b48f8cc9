"""Running the engine on a Dask cluster: folders of photos spread over workers.

``maskwatch analyze FOLDER --cluster ADDRESS`` sends the photos of a folder, a few at
a time, to the workers of a Dask cluster; each worker process builds one
:class:`~maskwatch.engine.Engine` (from the same settings) the first time it gets work
and keeps it, reads its photos itself (the files must be readable from every worker:
a shared folder, or one machine) and answers the engine JSON of each. The answers come
back in the order of the folder, so the JSON lines are the ones ``analyze`` writes
without a cluster (only the timings differ). At most two tasks per worker are in
flight, so a huge folder never queues all of itself on the scheduler.

``ADDRESS`` is ``tcp://HOST:8786`` (a running ``dask scheduler``, with ``dask worker
tcp://HOST:8786`` on each machine) or ``local[:N]``: a cluster of N worker processes
(default 2) on 127.0.0.1, started for the run.

``maskwatch serve --cluster ADDRESS`` runs each server source (a camera, an RTSP/HTTP
stream, a video file) as one long-lived task on a worker (:func:`run_source`), placed by
the scheduler; the web app (:mod:`maskwatch.web.cluster_sources`) submits the tasks and
shows what they send back. A task talks to the web app through three Dask objects named
after its source (they live on the scheduler): a queue of at most one message (the
latest annotated JPEG and its engine JSON; a frame that finds the queue full is dropped,
so a slow page sees fewer frames, never older ones), an event that stops it, and a
variable with the last frame handed over (a video file restarted on another worker
resumes there). All source tasks of a worker process share one engine, whose model
calls take turns under a lock; the gallery and the events are the engine's store
(MongoDB, so that every machine sees the same people: people changed on the page reach
every worker within the engine's ``watch_s``, 1 s).

Dask is an extra: ``pip install 'maskwatch[cluster]'``. Without it the rest of
maskwatch works as before, and asking for a cluster raises one clear
:class:`~maskwatch.errors.ClusterError`.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from maskwatch.errors import ClusterError

log = logging.getLogger(__name__)

#: Photos per task: enough to make a task's overhead small, few enough to spread a
#: small folder over every worker.
PHOTOS_PER_TASK = 4
#: Tasks in flight per worker.
TASKS_PER_WORKER = 2
#: Seconds to wait for the scheduler to answer.
CONNECT_TIMEOUT_S = 10.0
#: Threads of each worker of a ``local:N`` cluster started by ``serve``: each runs one source.
SOURCES_PER_WORKER = 16
#: Dask settings of a ``local:N`` cluster (its workers take them from this process): a
#: silent worker (a machine gone) counts as dead after 10 s (Dask's default: 5 minutes;
#: give ``dask scheduler`` ``DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL=10s``). The
#: workers' statistical profiler, which samples every thread's stack every 10 ms, is off:
#: with long-lived source tasks it only costs time. Give a ``dask worker`` elsewhere
#: ``DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False``.
LOCAL_CONFIG = {"distributed.scheduler.worker-ttl": "10s",
                "distributed.worker.profile.enabled": False}
#: Seconds between a source task's looks at its stop event and saves of its progress.
CHECK_EVERY_S = 0.5
#: Seconds a source task goes on while the scheduler cannot be reached, then it stops.
LOST_SCHEDULER_S = 15.0

_LOCAL = re.compile(r"local(?::(\d{1,2}))?")


def _dask() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ClusterError("running on a cluster needs Dask: "
                           "pip install 'maskwatch[cluster]'") from exc
    return distributed


def local_workers(address: str) -> int | None:
    """The worker count of a ``local[:N]`` address (2 when N is not given); None for a
    scheduler address."""
    local = _LOCAL.fullmatch(address.strip())
    return int(local.group(1) or 2) if local else None


def check_address(address: str) -> str:
    """``address`` stripped, if it is ``local[:N]`` (N >= 1) or ``tcp://HOST:PORT``.

    Raises:
        ClusterError: anything else.
    """
    address = address.strip()
    local = local_workers(address)
    if local is not None and local < 1:
        raise ClusterError("local:N needs at least one worker")
    if local is None and not re.fullmatch(r"(tcp|tls)://[^\s/]+:\d+", address):
        raise ClusterError(f"{address!r}: give the scheduler as tcp://HOST:PORT, or local[:N]")
    return address


@contextmanager
def cluster_client(address: str, *, threads_per_worker: int = 1) -> Iterator[Any]:
    """A ``distributed.Client`` for ``address`` (see the module docstring); a local
    cluster started here (``threads_per_worker`` threads in each of its processes) is
    closed on exit.

    Raises:
        ClusterError: Dask is missing, the address is malformed, or the scheduler
            does not answer within :data:`CONNECT_TIMEOUT_S`.
    """
    distributed = _dask()
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("distributed").setLevel(logging.WARNING)
    address = check_address(address)
    workers = local_workers(address)
    cluster = None
    try:
        if workers is not None:
            import dask

            # Loopback only, no dashboard; Dask's own log lines only when they matter.
            with dask.config.set(LOCAL_CONFIG):
                # (the scheduler's HTTP server, dashboard or not, on loopback too)
                cluster = distributed.LocalCluster(host="127.0.0.1", n_workers=workers,
                                                   dashboard_address="127.0.0.1:0",
                                                   threads_per_worker=threads_per_worker,
                                                   processes=True,
                                                   scheduler_kwargs={"dashboard": False},
                                                   silence_logs=logging.WARNING)
            client = distributed.Client(cluster)
        else:
            try:
                client = distributed.Client(address, timeout=CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                raise ClusterError(f"cannot reach the Dask scheduler at {address} "
                                   f"within {CONNECT_TIMEOUT_S:g} s: {exc}") from exc
        try:
            yield client
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


def worker_count(client: Any) -> int:
    """Workers the scheduler knows now (at least 1)."""
    return max(1, len(client.scheduler_info().get("workers", {})))


def analyze_photos(client: Any, settings: Any, source: str, root: str | Path,
                   names: Sequence[str]) -> Iterator[dict[str, Any]]:
    """The engine JSON of each photo, in order, analysed on the cluster's workers.

    Args:
        client: a ``distributed.Client`` (:func:`cluster_client`).
        settings: the :class:`~maskwatch.engine.EngineSettings` every worker builds its
            engine from (events are not recorded: photos make none).
        source: the folder as it appears in the JSON (``source``).
        root: the folder the workers read from.
        names: the photos, relative to ``root``, in order.

    Yields:
        For each photo, the dict of :meth:`FrameResult.to_dict` (``frame`` is its
        position in ``names``), or ``{"problem": message, "name": ..., "source": ...}``
        for a photo that cannot be read.
    """
    settings = replace(settings, events=False)
    chunks = [list(enumerate(names))[i:i + PHOTOS_PER_TASK]
              for i in range(0, len(names), PHOTOS_PER_TASK)]
    pending: collections.deque[Any] = collections.deque()
    limit = TASKS_PER_WORKER * worker_count(client)
    todo = iter(chunks)
    try:
        while True:
            while len(pending) < limit:
                chunk = next(todo, None)
                if chunk is None:
                    break
                pending.append(client.submit(analyze_chunk, settings, source, str(root), chunk,
                                             pure=False, retries=2))
            if not pending:
                return
            yield from pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()


#: This worker process's engines (each with the lock its model calls take turns under),
#: by their settings.
_ENGINES: dict[str, tuple[Any, threading.Lock]] = {}
_ENGINES_LOCK = threading.Lock()
#: Set when this worker process closes: its source tasks stop.
_CLOSING = threading.Event()


def worker_engine(settings: Any) -> tuple[Any, threading.Lock]:
    """On a worker: this process's :class:`~maskwatch.engine.Engine` for ``settings``
    (built on first use) and the lock every call of its models must hold.

    Events the store cannot take when the worker closes are kept in a spool file of
    this worker (``pending-events-worker-NAME.jsonl`` in the data folder), read again
    when a worker of the same name starts. Settings without ``threads`` take
    ``$MASKWATCH_WORKER_THREADS`` when it is set (``dask worker --nworkers`` processes on
    one machine: cores / processes each).
    """
    from maskwatch.engine import Engine

    key = repr(settings)
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            env = os.environ.get("MASKWATCH_WORKER_THREADS", "").strip()
            if settings.threads is None and env.isdigit() and int(env) > 0:
                settings = replace(settings, threads=int(env))
            if not _ENGINES:
                _frames_off_mmap()
            if settings.db and settings.events and settings.spool is None:
                from maskwatch.gallery import default_gallery_path

                settings = replace(settings, spool=default_gallery_path().parent
                                   / f"pending-events-worker-{_worker_name()}.jsonl")
            _ENGINES[key] = (Engine(settings), threading.Lock())
        return _ENGINES[key]


def _frames_off_mmap() -> None:
    """Keep frame-sized buffers on glibc's heap in this process.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also fixes
    glibc's mmap threshold at 128 KiB: every frame (900 KB at 640x480) is then mapped
    and unmapped again, page faults and all. Measured here: 17.7 ms of CPU per frame
    against 13.5 ms (four sources in one process). Raising the mmap threshold to 32 MiB
    (and trimming above 128 MiB) gives the speed back; elsewhere than glibc nothing is done.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 32 * 2**20)   # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 * 2**20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _worker_name() -> str:
    try:
        from distributed import get_worker

        name = str(get_worker().name)
    except (ImportError, ValueError):
        name = str(os.getpid())
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")[:64] or "0"


def close_worker_engines(wait_s: float = 5.0) -> None:
    """On a worker that closes: stop its source tasks (their last events are handed to
    the writer), then close its engines (pending events written, or spooled)."""
    _CLOSING.set()
    deadline = time.monotonic() + wait_s
    while _RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
    with _ENGINES_LOCK:
        engines = list(_ENGINES.values())
        _ENGINES.clear()
    for engine, lock in engines:
        with lock:
            engine.close()


def engine_closer() -> Any:
    """A Dask worker plugin that calls :func:`close_worker_engines` when its worker closes
    (``client.register_plugin(engine_closer())``)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class EngineCloser(WorkerPlugin):
        name = "maskwatch-engines"

        def teardown(self, worker: Any) -> None:
            close_worker_engines()

    return EngineCloser()


def analyze_chunk(settings: Any, source: str, root: str,
                  chunk: Sequence[tuple[int, str]]) -> list[dict[str, Any]]:
    """On a worker: analyse ``chunk`` (``(index, name)`` pairs) with this process's engine."""
    from maskwatch.ops.image import MIN_FACE_IMAGE_SIDE, ImageError, read_image

    engine, lock = worker_engine(settings)
    out: list[dict[str, Any]] = []
    for index, name in chunk:
        try:
            image = read_image(Path(root) / name, max_pixels=settings.max_pixels,
                               min_side=MIN_FACE_IMAGE_SIDE)
        except ImageError as exc:
            out.append({"problem": str(exc), "name": name, "source": source})
            continue
        with lock:
            result = engine.analyze(image)
        result.frame_index, result.timestamp = index, float(index)
        result.source, result.name = source, name
        out.append(result.to_dict())
    return out


# -- server sources: one long-lived task per source --------------------------------------

#: Source tasks running in this worker process, by channel.
_RUNNING: set[str] = set()


def channel_names(channel: str) -> dict[str, str]:
    """Names of the Dask queue, event and variable of a source's ``channel``."""
    return {"frames": f"{channel}-frames", "stop": f"{channel}-stop",
            "progress": f"{channel}-progress"}


class _Outbox:
    """A source task's side of its channel (see the module docstring)."""

    def __init__(self, channel: str) -> None:
        from distributed import Event, Queue, Variable

        names = channel_names(channel)
        self.frames = Queue(names["frames"], maxsize=1)
        self.stop_event = Event(names["stop"])
        self.progress = Variable(names["progress"])
        self.sent = 0
        self.dropped = 0
        self._next_check = 0.0
        self._stopped = False
        self._unreachable_since: float | None = None

    def resume_point(self) -> dict[str, Any]:
        """What an earlier run of this source saved (``frame``, ``origin``), or ``{}``
        (the web app sets the variable before it submits the task, so this never waits)."""
        try:
            return dict(self.progress.get(timeout=5.0) or {})
        except Exception:  # noqa: BLE001 - start from the beginning
            return {}

    def send(self, message: dict[str, Any], *, wait_s: float = 0.0) -> bool:
        """Put a message in the queue if it has room within ``wait_s`` seconds; else it
        is dropped (and counted). Room is asked first: a put that times out is logged as
        an error by the scheduler."""
        deadline = time.monotonic() + wait_s
        try:
            while self.frames.qsize() >= 1:
                if time.monotonic() >= deadline:
                    self.dropped += 1
                    return False
                time.sleep(0.02)
            self.frames.put(message)
        except Exception as exc:  # noqa: BLE001 - the scheduler is away: the task will stop
            self._unreachable(exc)
            return False
        self.sent += 1
        self._unreachable_since = None
        return True

    def should_stop(self, progress: dict[str, Any] | None = None) -> bool:
        """True once the web app asked to stop, the worker closes or the scheduler has been
        unreachable for :data:`LOST_SCHEDULER_S`; saves ``progress`` every
        :data:`CHECK_EVERY_S` seconds."""
        if self._stopped or _CLOSING.is_set():
            return True
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + CHECK_EVERY_S
        try:
            if progress is not None:
                self.progress.set(progress)
            self._stopped = bool(self.stop_event.is_set())
        except Exception as exc:  # noqa: BLE001
            self._unreachable(exc)
        if (self._unreachable_since is not None
                and now - self._unreachable_since > LOST_SCHEDULER_S):
            log.warning("the scheduler has been unreachable for %.0f s: stopping",
                        now - self._unreachable_since)
            self._stopped = True
        return self._stopped

    def _unreachable(self, exc: BaseException) -> None:
        if self._unreachable_since is None:
            log.info("the scheduler cannot be reached: %s", exc)
            self._unreachable_since = time.monotonic()


def run_source(settings: Any, channel: str, spec: str, event_name: str) -> dict[str, Any]:
    """On a worker: analyse one server source until it ends, fails, or is stopped.

    Reads ``spec`` (a camera index, URL or video file as seen from this worker) in real
    time through this process's engine (:func:`worker_engine`; its model calls take turns
    with the other sources of this process), draws each frame's faces and sends the
    JPEG with its engine JSON on ``channel`` (see the module docstring). Events of the
    source's ended tracks are recorded in the engine's store as ``event_name``. A video
    file run again (its worker died) resumes at the last frame sent, with the same event
    times.

    Returns:
        ``{"state": "finished" | "stopped" | "failed", "message", "frames", "tracks",
        "events", "sent", "dropped", "worker"}``: ``tracks`` counts the tracks this run
        ended, ``events`` those handed to the engine's event writer (tracks of at least
        the recorder's ``min_frames``).
    """
    from maskwatch.draw import FaceAnnotator
    from maskwatch.sources import SourceError, open_source

    worker = _worker_address()
    outbox = _Outbox(channel)
    resume = outbox.resume_point()
    summary: dict[str, Any] = {"state": "failed", "message": "", "frames": 0, "tracks": 0,
                               "events": 0, "worker": worker}

    def state(name: str, message: str) -> None:
        outbox.send({"kind": "state", "state": name, "message": message, "worker": worker,
                     "pid": os.getpid()}, wait_s=1.0)

    state("connecting", f"opening on {worker}")
    _RUNNING.add(channel)
    try:
        engine, lock = worker_engine(settings)

        def call(fn: Any, *args: Any) -> Any:
            with lock:
                return fn(*args)

        try:
            src = open_source(spec, max_pixels=settings.max_pixels,
                              max_retries=settings.max_retries)
        except SourceError as exc:
            summary["message"] = str(exc)
            state("failed", str(exc))
            return summary
        start = int(resume.get("frame", -1)) + 1
        origin = resume.get("origin") or (time.time() if src.kind == "video" else None)
        stream = call(lambda: engine.stream(event_name, time_origin=origin))
        min_frames = stream.recorder.min_frames if stream.recorder is not None else None

        def ended(tracks: list[Any]) -> None:
            summary["tracks"] += len(tracks)
            if min_frames is not None:
                summary["events"] += sum(1 for t in tracks if int(t.hits) >= min_frames)
        problems: list[str] = []

        def problem(item: Any) -> None:
            problems.append(item.message)
            state("reconnecting", item.message)

        annotator = FaceAnnotator()
        results = engine.run(src, stream=stream, realtime=True, call=call, on_problem=problem,
                             start=start if src.kind == "video" else 0)
        progress: dict[str, Any] = {"frame": start - 1, "origin": origin}
        try:
            state("live", src.description)
            for result in results:
                ended(result.ended)
                summary["frames"] += 1
                jpeg = annotator.jpeg(result.image, result)
                if jpeg is not None:
                    outbox.send({"kind": "frame", "jpeg": jpeg,
                                 "result": result.to_dict(), "read_at": result.read_at,
                                 "sent_at": time.time(), "worker": worker,
                                 "description": src.description, "origin": origin,
                                 "events": summary["events"]})
                progress = {"frame": result.frame_index, "origin": origin}
                if outbox.should_stop(progress):
                    break
        finally:
            results.close()
            ended(call(stream.finish))
        if outbox.should_stop(progress):
            summary["state"], summary["message"] = "stopped", "stopped"
        elif problems and src.is_live:
            summary["message"] = problems[-1]
        else:
            summary["state"], summary["message"] = "finished", f"end of {src.source}"
        return summary
    finally:
        _RUNNING.discard(channel)
        summary.update(sent=outbox.sent, dropped=outbox.dropped)
        if summary["state"] != "stopped":
            state(summary["state"], summary["message"])


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"
