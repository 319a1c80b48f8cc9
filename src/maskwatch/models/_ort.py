"""One way to open an onnxruntime session on the CPU, for every model that uses it."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

log = logging.getLogger(__name__)


def quiet_runtime_telemetry() -> None:
    """Turn off the usage telemetry of onnxruntime and OpenVINO; call before importing them.

    Both write under the user's home and report to their vendor unless told not to:

    - onnxruntime (official wheels) creates ``~/.cache/Microsoft/DeveloperTools/.onnxruntime``
      (a device id and an event database) when it initialises, that is on import, so
      ``onnxruntime.disable_telemetry_events()`` comes too late; ``ORT_DISABLE_TELEMETRY=1``
      set before the import stops the uploader, the events and the id file. A value the
      user has set already is kept (an explicit opt-in is theirs to make).
    - ``import openvino`` imports its model converter, which through the
      ``openvino_telemetry`` package writes ``~/intel/openvino_ga_cid`` and queues an
      "import" event for Google Analytics (opted in unless a consent file says no). That
      package has no switch short of a file in the user's home; marking it absent makes
      OpenVINO use its own no-op stub, as it does when the package is not installed.
      Nothing of maskwatch uses that package.

    OpenCV writes nothing (checked with the CPU DNN and FaceDetectorYN paths).
    """
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    if "openvino" not in sys.modules and "openvino_telemetry" not in sys.modules:
        # a None entry makes `import openvino_telemetry` raise ImportError
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]
    elif sys.modules.get("openvino_telemetry") is not None:
        log.debug("openvino_telemetry was imported before maskwatch could turn it off")


def cpu_session(model: str | bytes, threads: int | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU for a model file path or model bytes.

    Args:
        model: path of an ONNX file, or a serialised model.
        threads: intra-op threads (None: onnxruntime's default, one per core).

    onnxruntime's worker threads otherwise spin for a while after each run, taking the
    cores from the OpenCV detector and embedder that run next: on 2 cores that made
    YuNet 16 ms instead of 11 and SFace 32 ms instead of 18. So spinning is off.
    """
    quiet_runtime_telemetry()
    import onnxruntime as ort

    ort.disable_telemetry_events()  # no-op when ORT_DISABLE_TELEMETRY held; else at least no events
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
