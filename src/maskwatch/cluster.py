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

Dask is an extra: ``pip install 'maskwatch[cluster]'``. Without it the rest of
maskwatch works as before, and asking for a cluster raises one clear
:class:`~maskwatch.errors.ClusterError`.
"""

from __future__ import annotations

import collections
import logging
import re
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

_LOCAL = re.compile(r"local(?::(\d{1,2}))?")


def _dask() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ClusterError("running on a cluster needs Dask: "
                           "pip install 'maskwatch[cluster]'") from exc
    return distributed


def check_address(address: str) -> str:
    """``address`` stripped, if it is ``local[:N]`` (N >= 1) or ``tcp://HOST:PORT``.

    Raises:
        ClusterError: anything else.
    """
    address = address.strip()
    local = _LOCAL.fullmatch(address)
    if local and int(local.group(1) or 2) < 1:
        raise ClusterError("local:N needs at least one worker")
    if not local and not re.fullmatch(r"(tcp|tls)://[^\s/]+:\d+", address):
        raise ClusterError(f"{address!r}: give the scheduler as tcp://HOST:PORT, or local[:N]")
    return address


@contextmanager
def cluster_client(address: str) -> Iterator[Any]:
    """A ``distributed.Client`` for ``address`` (see the module docstring); a local
    cluster started here is closed on exit.

    Raises:
        ClusterError: Dask is missing, the address is malformed, or the scheduler
            does not answer within :data:`CONNECT_TIMEOUT_S`.
    """
    distributed = _dask()
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("distributed").setLevel(logging.WARNING)
    address = check_address(address)
    local = _LOCAL.fullmatch(address)
    cluster = None
    try:
        if local:
            workers = int(local.group(1) or 2)
            # Loopback only, no dashboard; Dask's own log lines only when they matter.
            cluster = distributed.LocalCluster(host="127.0.0.1", n_workers=workers,
                                               threads_per_worker=1, processes=True,
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


#: This worker process's engines, by their settings.
_ENGINES: dict[str, Any] = {}


def analyze_chunk(settings: Any, source: str, root: str,
                  chunk: Sequence[tuple[int, str]]) -> list[dict[str, Any]]:
    """On a worker: analyse ``chunk`` (``(index, name)`` pairs) with this process's engine."""
    from maskwatch.engine import Engine
    from maskwatch.ops.image import MIN_FACE_IMAGE_SIDE, ImageError, read_image

    key = repr(settings)
    if key not in _ENGINES:
        _ENGINES[key] = Engine(settings)
    engine = _ENGINES[key]
    out: list[dict[str, Any]] = []
    for index, name in chunk:
        try:
            image = read_image(Path(root) / name, max_pixels=settings.max_pixels,
                               min_side=MIN_FACE_IMAGE_SIDE)
        except ImageError as exc:
            out.append({"problem": str(exc), "name": name, "source": source})
            continue
        result = engine.analyze(image)
        result.frame_index, result.timestamp = index, float(index)
        result.source, result.name = source, name
        out.append(result.to_dict())
    return out
