"""Student embedder files (SFace's interface, maskwatch metadata) loaded by SFaceEmbedder.

The students here are built from SFace itself: its float32 graph with the metadata
added (embeddings equal SFace's), and the same with the Gemm weight stored as int8 per
output channel behind a ``DequantizeLinear(axis=0)`` node, as ``maskwatch
train-embedder`` writes large weights (the runtime folds it back to float32 at load).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from maskwatch.models.detector import YuNetDetector
from maskwatch.models.embedder import (
    META_NAME,
    META_SPACE,
    META_VERSION,
    SFACE_NAME,
    SFaceEmbedder,
    create_embedder,
    embedder_metadata,
    sface_fp32_model,
    sface_model_path,
)
from maskwatch.ops.image import read_image

onnx = pytest.importorskip("onnx", reason="student files are read with the onnx package")

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
FP32 = ["openvino", "onnxruntime"] if HAS_OPENVINO else ["onnxruntime"]
STUDENT_META = {META_NAME: "sface-masked-student", META_VERSION: "7", META_SPACE: SFACE_NAME}


def write_student(
    path: Path, *, int8_gemm: bool = False, meta: dict[str, str] | None = None
) -> Path:
    """SFace's float32 graph written as a student file (metadata ``meta``); with
    ``int8_gemm`` its Gemm weight is int8 per output channel + DequantizeLinear(axis=0)."""
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(sface_fp32_model(sface_model_path()))
    graph = model.graph
    if int8_gemm:
        gemm = next(n for n in graph.node if n.op_type == "Gemm")
        name = gemm.input[1]
        init = next(t for t in graph.initializer if t.name == name)
        w = numpy_helper.to_array(init)  # (128, 50176), transB = 1: rows are output channels
        scale = (np.abs(w).max(axis=1) / 127.0).astype(np.float32)
        q = np.clip(np.round(w / scale[:, None]), -127, 127).astype(np.int8)
        graph.initializer.remove(init)
        graph.initializer.extend(
            [
                numpy_helper.from_array(q, name + "_int8"),
                numpy_helper.from_array(scale, name + "_scale"),
                numpy_helper.from_array(np.zeros_like(scale, np.int8), name + "_zero"),
            ]
        )
        graph.node.insert(
            0,
            helper.make_node(
                "DequantizeLinear",
                [name + "_int8", name + "_scale", name + "_zero"],
                [name],
                axis=0,
                name="gemm_weight_dequantise",
            ),
        )
    for key, value in (STUDENT_META if meta is None else meta).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def students(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("students")
    return {
        "fp32": write_student(folder / "student.onnx"),
        "int8": write_student(folder / "student-int8.onnx", int8_gemm=True),
    }


@pytest.fixture(scope="module")
def crops(datasets: Path) -> np.ndarray:
    """Aligned crops of every face YuNet finds in identity-examples (about 30)."""
    det, sface = YuNetDetector(max_side=1280), SFaceEmbedder(backend="opencv")
    root = datasets / "identity-examples" / "examples"
    out = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"}):
        image = read_image(path)
        out.append(sface.align(image, det.detect(image)))
    crops = np.concatenate(out)
    assert len(crops) >= 20
    return crops


def test_sface_names_itself():
    sface = SFaceEmbedder(backend="opencv")
    assert (sface.name, sface.version, sface.space) == (SFACE_NAME, "1", SFACE_NAME)
    assert embedder_metadata(sface_model_path()) == {}


def test_a_student_takes_its_name_from_its_metadata(students):
    assert embedder_metadata(students["fp32"]) == {
        "name": "sface-masked-student",
        "version": "7",
        "space": SFACE_NAME,
    }
    for backend in ("auto", *FP32):
        stu = SFaceEmbedder(model_path=students["fp32"], backend=backend)
        assert (stu.name, stu.version, stu.space) == ("sface-masked-student", "7", SFACE_NAME)
        assert stu.backend == (FP32[0] if backend == "auto" else backend)
    by_name = create_embedder(str(students["fp32"]))
    assert isinstance(by_name, SFaceEmbedder) and by_name.name == "sface-masked-student"


@pytest.mark.parametrize("backend", FP32)
def test_a_student_with_sfaces_weights_embeds_as_sface(students, crops, backend):
    sface = SFaceEmbedder(backend=backend)
    stu = SFaceEmbedder(model_path=students["fp32"], backend=backend)
    np.testing.assert_allclose(stu.embed_aligned(crops), sface.embed_aligned(crops), atol=1e-6)


@pytest.mark.parametrize("backend", FP32)
def test_an_int8_gemm_is_folded_and_agrees_with_sface(students, crops, backend):
    model = onnx.load(str(students["int8"]))
    deq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert (
        len(deq) == 1 and onnx.helper.get_attribute_value(deq[0].attribute[0]) == 0
    )  # per output channel
    folded = onnx.load_from_string(sface_fp32_model(students["int8"]))
    assert not any(n.op_type == "DequantizeLinear" for n in folded.graph.node)
    sface = SFaceEmbedder(backend=backend).embed_aligned(crops)
    stu = SFaceEmbedder(model_path=students["int8"], backend=backend).embed_aligned(crops)
    cosines = (sface * stu).sum(axis=1)
    assert cosines.min() > 0.99, f"least cosine {cosines.min():.4f}"
    assert np.abs(sface - stu).max() > 1e-5  # the int8 weight is what ran, not SFace's float32 one


def test_a_student_does_not_run_in_opencv(students):
    with pytest.raises(ValueError, match="not in OpenCV"):
        SFaceEmbedder(model_path=students["fp32"], backend="opencv")


def test_a_file_without_maskwatch_metadata_is_taken_for_sface(tmp_path):
    plain = write_student(tmp_path / "sface-fp32.onnx", meta={})
    emb = SFaceEmbedder(model_path=plain, backend="onnxruntime")
    assert (emb.name, emb.version, emb.space) == (SFACE_NAME, "1", SFACE_NAME)


def test_missing_and_broken_files_give_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="embedder file not found"):
        create_embedder(str(tmp_path / "missing.onnx"))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not an ONNX model"):
        create_embedder(str(broken))
    with pytest.raises(ValueError, match="unknown embedder"):
        create_embedder("arcface")
