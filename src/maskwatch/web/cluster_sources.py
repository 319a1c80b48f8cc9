"""Server sources run on a Dask cluster (``maskwatch serve --cluster ADDRESS``).

The web app stays the one front door. :class:`ClusterLink` holds the connection to the
scheduler (a ``local:N`` cluster is started here) and keeps it: when the scheduler goes
away the sources say so, the page keeps serving, and once it answers again (Dask's own
reconnection, else a new client every :data:`RETRY_S` seconds) every source that was
running is submitted again. Each :class:`ClusterSource` submits one
:func:`maskwatch.cluster.run_source` task and reads what it sends (the latest annotated
JPEG and engine JSON, see :mod:`maskwatch.cluster`) on a thread of its own; it shows
the same state and MJPEG stream as a source read on this machine, plus the worker it
runs on and how often it was restarted.

A worker that dies (its process killed, its machine gone) has its tasks run again by
the scheduler on another worker; a video file resumes at the last frame it sent. Dask
gives up on a task whose workers died three times in a row
(``distributed.scheduler.allowed-failures``): the source is then shown as failed, not
retried for ever.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from maskwatch.cluster import local_workers
from maskwatch.errors import ClusterError
from maskwatch.web.sources import STALE_S, FrameBoard, SourceInfo

log = logging.getLogger(__name__)

#: Seconds between attempts to reach a scheduler that is away.
RETRY_S = 5.0
#: Seconds a source's reader waits for a message before it looks at its task again.
POLL_S = 1.0
#: Frames whose end-to-end latency is kept per source (for ``latency_ms``).
LATENCY_WINDOW = 100


class ClusterLink:
    """The web app's connection to the Dask scheduler.

    Args:
        address: ``tcp://HOST:PORT`` or ``local[:N]`` (see :func:`maskwatch.cluster.check_address`).
        settings: the :class:`~maskwatch.engine.EngineSettings` every worker builds its
            engine from.

    Raises:
        ClusterError: Dask is missing, the address is malformed, or a ``local:N`` cluster
            cannot start. A scheduler that does not answer is not an error: the link
            keeps trying, and says so.
    """

    def __init__(self, address: str, settings: Any) -> None:
        from maskwatch.cluster import _dask, check_address

        _dask()
        self.address = check_address(address)
        self.settings = settings
        self.run_id = uuid.uuid4().hex[:8]
        self.client: Any = None
        #: Changes each time the link (re)connects: sources submit their task again.
        self.epoch = 0
        #: Why the scheduler cannot be used now ("" while it can).
        self.problem = "connecting to the Dask scheduler"
        self._cluster_cm: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._connected = threading.Event()
        if local_workers(self.address) is not None:
            self._connect()  # nothing to wait for: it starts or fails now
        self._thread = threading.Thread(target=self._keep, name="maskwatch-cluster-link",
                                        daemon=True)
        self._thread.start()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def _connect(self) -> None:
        from maskwatch.cluster import SOURCES_PER_WORKER, cluster_client, engine_closer

        cm = cluster_client(self.address, threads_per_worker=SOURCES_PER_WORKER)
        client = cm.__enter__()
        try:
            client.register_plugin(engine_closer())
        except BaseException:
            cm.__exit__(None, None, None)
            raise
        with self._lock:
            self._cluster_cm, self.client = cm, client
            self.epoch += 1
            self.problem = ""
        self._connected.set()
        log.info("connected to the Dask scheduler at %s (%d workers)", self.address,
                 len(client.scheduler_info().get("workers", {})))

    def _drop(self) -> None:
        with self._lock:
            cm, self._cluster_cm, self.client = self._cluster_cm, None, None
        if cm is not None:
            try:
                cm.__exit__(None, None, None)
            except Exception:  # noqa: BLE001 - it is gone anyway
                log.debug("closing the old client", exc_info=True)

    def _keep(self) -> None:
        warned = False
        while not self._stop.is_set():
            client = self.client
            if client is None:
                try:
                    self._connect()
                    if warned:
                        log.warning("the Dask scheduler at %s answers again", self.address)
                    warned = False
                    continue
                except ClusterError as exc:
                    self.problem = f"{exc}; retrying every {RETRY_S:g} s"
                except Exception as exc:  # noqa: BLE001 - keep serving the page
                    self.problem = (f"cannot use the Dask scheduler at {self.address}: {exc}; "
                                    f"retrying every {RETRY_S:g} s")
                if not warned:
                    log.warning("%s", self.problem)
                    warned = True
                self._stop.wait(RETRY_S)
                continue
            status = getattr(client, "status", "closed")
            if status == "running":
                if not self._connected.is_set():
                    # Dask reconnected by itself: the tasks were lost with the scheduler.
                    with self._lock:
                        self.epoch += 1
                        self.problem = ""
                    self._connected.set()
                    log.warning("the Dask scheduler at %s answers again", self.address)
                    warned = False
            elif status in ("connecting", "newly-created"):
                if self._connected.is_set():
                    self._connected.clear()
                    self.problem = (f"lost the Dask scheduler at {self.address}; reconnecting "
                                    "(the page keeps serving)")
                    log.warning("%s", self.problem)
                    warned = True
            else:  # closed: Dask gave up reconnecting
                self._connected.clear()
                self.problem = (f"lost the Dask scheduler at {self.address}; retrying every "
                                f"{RETRY_S:g} s")
                if not warned:
                    log.warning("%s", self.problem)
                    warned = True
                self._drop()
                continue
            self._stop.wait(0.5)

    def open_source(self, source_id: str, spec: str, kind: str,
                    taken: set[str]) -> ClusterSource:
        """Start a :class:`ClusterSource` for ``spec`` (of ``kind``, from
        :func:`maskwatch.sources.parse_source`); its events are named as on one machine,
        with ``#ID`` added when a running source in ``taken`` has the name already."""
        from pathlib import Path

        from maskwatch.events import event_source_name
        from maskwatch.sources import mask_url, parse_source

        _, target = parse_source(spec)
        if kind == "video":  # the workers read it: name it absolutely
            spec = target = str(Path(target).resolve())
        shown = f"camera:{int(target)}" if kind == "camera" else (
            mask_url(target) if kind == "url" else target)
        name = event_source_name(kind, shown)
        return ClusterSource(source_id, spec, self,
                             f"{name}#{source_id}" if name in taken else name)

    def workers(self) -> dict[str, dict[str, Any]]:
        """The workers the scheduler knows, by address (empty while it is away)."""
        client = self.client
        if client is None or not self.connected:
            return {}
        try:
            return dict(client.scheduler_info().get("workers", {}))
        except Exception:  # noqa: BLE001
            return {}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=RETRY_S + 15)
        self._connected.clear()
        self._drop()


class ClusterSource(FrameBoard):
    """A server source whose frames are read and analysed by a cluster worker.

    Shows what it receives as a :class:`~maskwatch.web.sources.FrameBoard`, as a source
    read on this machine does (``info``, ``wait_frame``, ``jpeg``, ``latest``, ``stop``).
    """

    def __init__(self, source_id: str, spec: str, link: ClusterLink, event_name: str) -> None:
        super().__init__(source_id, spec, "waiting", "waiting for the Dask scheduler")
        self.link = link
        self.event_name = event_name
        self.channel = f"maskwatch-{link.run_id}-{source_id}"
        self.worker = ""
        self.restarts = 0
        #: The task's summary once it ended (see :func:`maskwatch.cluster.run_source`).
        self.summary: dict[str, Any] | None = None
        #: End-to-end seconds (read on the worker to received here) of recent frames.
        self.latencies: list[float] = []
        #: Events handed to the store's writer by each run of the task (one entry per run).
        self.events: list[int] = []
        #: Process id of the worker running it (from its first message).
        self.pid: int | None = None
        self._progress: dict[str, Any] = {}
        self._future: Any = None
        self._epoch = -1
        self._thread = threading.Thread(target=self._run, name=f"maskwatch-cluster-{source_id}",
                                        daemon=True)
        self._thread.start()

    # -- what the page shows ----------------------------------------------------------

    def info(self) -> SourceInfo:
        state, message = self.state, self.message
        if not self.link.connected and state not in ("finished", "failed", "stopped"):
            state, message = "waiting", self.link.problem
        elif state == "starting" and not self.link.workers():
            message = (f"no worker: start one with `dask worker {self.link.address}`"
                       if local_workers(self.link.address) is None else "no worker yet")
        silent_s = self._silent_s()
        if state == "live" and silent_s > STALE_S:
            state = "reconnecting"
            message = f"no frame for {silent_s:.0f} s from {self.worker or 'its worker'}"
        return self._info(state, message, worker=self.worker, restarts=self.restarts)

    # -- the task ---------------------------------------------------------------------

    def _submit(self) -> Any:
        from distributed import Queue, Variable

        from maskwatch.cluster import channel_names, run_source

        client = self.link.client
        names = channel_names(self.channel)
        # made here with room for one message, before the task can make it
        queue = Queue(names["frames"], client=client, maxsize=1)
        # where to start: the beginning, or (the scheduler was lost) the last frame shown
        Variable(names["progress"], client=client).set(self._progress)
        future = client.submit(run_source, self.link.settings, self.channel, self.spec,
                               self.event_name, key=f"{self.channel}-{uuid.uuid4().hex[:6]}",
                               pure=False)
        # The reader waits on the queue without a timeout (a timed-out wait is logged as
        # an error by the scheduler): whatever ends the task also wakes it.
        future.add_done_callback(lambda _: self._wake(queue))
        return queue, future

    def _wake(self, queue: Any) -> None:
        try:
            if queue.qsize() == 0:  # else the reader wakes anyway
                queue.put({"kind": "wake"})
        except Exception:  # noqa: BLE001 - gone
            pass

    def _wake_reader(self) -> None:
        from distributed import Queue

        from maskwatch.cluster import channel_names

        try:
            self._wake(Queue(channel_names(self.channel)["frames"], client=self.link.client))
        except Exception:  # noqa: BLE001
            pass

    def _run(self) -> None:
        queue = None
        while not self._stop.is_set():
            if not self.link.connected:
                self._stop.wait(0.5)
                continue
            if self._epoch != self.link.epoch or queue is None:
                try:
                    queue, self._future = self._submit()
                    self._epoch = self.link.epoch
                    self.state, self.message = "starting", "submitted to the scheduler"
                except Exception as exc:  # noqa: BLE001 - the link notices an outage
                    log.debug("source %s: could not submit: %s", self.id, exc)
                    self._stop.wait(0.5)
                    continue
            try:
                if self._future.done():
                    # the task is over: take what it left, then its summary (checked
                    # before waiting: its done-callback puts no wake into a full queue)
                    while queue.qsize():
                        self._take(queue.get())
                    if self._ended():
                        return
                    queue = None  # lost with the scheduler: submitted again
                    self._stop.wait(0.5)
                    continue
                self._take(queue.get())
            except Exception as exc:  # noqa: BLE001 - the scheduler went away
                log.debug("source %s: %s", self.id, exc)
                self._stop.wait(0.5)

    def _take(self, message: dict[str, Any]) -> None:
        if message.get("kind") == "wake":
            return
        worker = message.get("worker", "")
        if worker and self.worker and worker != self.worker:
            self.restarts += 1
            log.warning("source %s: restarted on %s (was on %s)", self.shown, worker, self.worker)
        self.worker = worker or self.worker
        if message.get("kind") == "state":
            if message["state"] == "connecting":  # the first message of each run
                self.events.append(0)
            self.pid = message.get("pid", self.pid)
            self.state, self.message = message["state"], message.get("message", "")
            if self.restarts and self.state == "connecting":
                self.message = f"restarted on {worker} ({self.restarts}x): {self.message}"
            return
        result = message["result"]
        if message.get("read_at"):
            self.latencies = (self.latencies + [time.time() - message["read_at"]])[
                -LATENCY_WINDOW:]
        self._progress = {"frame": result.get("frame", -1), "origin": message.get("origin")}
        if self.events:
            self.events[-1] = int(message.get("events", 0))
        self._publish(message["jpeg"], result, message.get("description", ""))

    def _ended(self) -> bool:
        """The task ended: take its summary; True when the source is over."""
        future = self._future
        if future.status == "cancelled":
            return False  # lost with the scheduler: submitted again
        try:
            self.summary = future.result(timeout=5)
            # Let the scheduler forget it: a result still wanted is computed again when
            # the worker that holds it dies, which would run an ended source again.
            future.release()
            self._future = None
        except Exception as exc:  # noqa: BLE001 - a worker death too many, or a bug
            name = type(exc).__name__
            if name == "KilledWorker":
                self.state, self.message = "failed", (
                    "its workers died too often in a row; not restarted (see the workers' "
                    "logs)")
            else:
                self.state, self.message = "failed", f"stopped: {exc}"
            log.warning("source %s: %s", self.shown, self.message)
            self._wake_viewers()
            return True
        if self.summary and self.events:
            self.events[-1] = int(self.summary.get("events", self.events[-1]))
        if self.summary and not self._stop.is_set():
            self.state = self.summary.get("state", "finished")
            self.message = self.summary.get("message", "")
        self._wake_viewers()
        return True

    def stop(self, wait: float = 5.0) -> None:
        """Ask the task to stop (it finishes its tracks: their events are recorded)."""
        self._stop.set()
        future = self._future
        if future is None or not self.link.connected:
            pass
        elif future.done():
            self._wake_reader()
        else:
            try:
                from distributed import Event

                from maskwatch.cluster import channel_names

                Event(channel_names(self.channel)["stop"], client=self.link.client).set()
                self.summary = future.result(timeout=wait)
                future.release()
                if self.events:
                    self.events[-1] = int(self.summary.get("events", self.events[-1]))
            except Exception:  # noqa: BLE001 - gone or slow: cancelled below
                log.debug("source %s did not stop in %.0f s", self.id, wait, exc_info=True)
                future.cancel()
                self._wake_reader()
        self.state, self.message = "stopped", "stopped"
        self._wake_viewers()
        self._thread.join(timeout=POLL_S + 1)
