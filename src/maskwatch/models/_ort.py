"""One way to open an onnxruntime session on the CPU, for every model that uses it."""

from __future__ import annotations

from typing import Any


def cpu_session(model: str | bytes, threads: int | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU for a model file path or model bytes.

    Args:
        model: path of an ONNX file, or a serialised model.
        threads: intra-op threads (None: onnxruntime's default, one per core).

    onnxruntime's worker threads otherwise spin for a while after each run, taking the
    cores from the OpenCV detector and embedder that run next: on 2 cores that made
    YuNet 16 ms instead of 11 and SFace 32 ms instead of 18. So spinning is off.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
