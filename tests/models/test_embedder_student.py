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


def _changed_student(path: Path) -> Path:
    """A student whose Gemm weights differ from SFace's (each input column scaled), so
    that its embeddings can be told apart from SFace's."""
    from onnx import numpy_helper

    model = onnx.load_from_string(sface_fp32_model(sface_model_path()))
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    init = next(t for t in model.graph.initializer if t.name == gemm.input[1])
    w = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array(w * np.linspace(0.3, 1.7, w.shape[1], dtype=np.float32),
                                          init.name))
    for key, value in STUDENT_META.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def test_mask_aware_embedder_sends_masked_faces_to_the_student(crops, tmp_path):
    from maskwatch.models.embedder import MaskAwareEmbedder

    sface = SFaceEmbedder(backend="onnxruntime", threads=1)
    student = SFaceEmbedder(model_path=_changed_student(tmp_path / "s.onnx"), backend="onnxruntime",
                            threads=1)
    both = MaskAwareEmbedder(sface, student)
    # SFace's templates, no re-enrolment
    assert (both.name, both.version) == (sface.name, sface.version)
    masked = np.arange(len(crops)) % 3 == 0
    got = both.embed_aligned(crops, masked)
    plain, changed = sface.embed_aligned(crops), student.embed_aligned(crops)
    assert np.allclose(got[masked], changed[masked], atol=1e-5)
    assert np.allclose(got[~masked], plain[~masked], atol=1e-5)
    assert np.max(np.sum(plain[masked] * changed[masked], axis=1)) < 0.999  # the two really differ
    # no mask labels: SFace (enrolment)
    assert np.allclose(both.embed_aligned(crops), plain, atol=1e-5)
    with pytest.raises(ValueError, match="flags"):
        both.embed_aligned(crops, masked[:-1])


def test_mask_aware_embedder_refuses_a_student_of_another_space(tmp_path):
    from maskwatch.models.embedder import MaskAwareEmbedder

    other = write_student(tmp_path / "o.onnx", meta={**STUDENT_META, META_SPACE: "dlib-resnet"})
    with pytest.raises(ValueError, match="space"):
        MaskAwareEmbedder(SFaceEmbedder(backend="onnxruntime"), SFaceEmbedder(model_path=other))


def test_the_engine_embeds_masked_faces_with_the_shipped_student():
    from maskwatch.config import (
        DEFAULT_MASKED_THRESHOLD,
        DEFAULT_THRESHOLD,
        STUDENT_MASKED_THRESHOLD,
    )
    from maskwatch.models.embedder import (
        MaskAwareEmbedder,
        engine_embedder,
        engine_thresholds,
        masked_student_path,
    )

    path = masked_student_path()
    assert path.is_file() and path.stat().st_size < 20e6  # shipped with the package
    both = engine_embedder("sface")
    assert isinstance(both, MaskAwareEmbedder)
    assert ((both.masked.name, both.masked.space, both.name)
            == ("sface-masked-student", SFACE_NAME, SFACE_NAME))
    assert engine_thresholds("sface", both) == (DEFAULT_THRESHOLD, STUDENT_MASKED_THRESHOLD)
    alone = engine_embedder("sface", "sface")
    assert isinstance(alone, SFaceEmbedder)
    assert engine_thresholds("sface", alone) == (DEFAULT_THRESHOLD, DEFAULT_MASKED_THRESHOLD)
    with pytest.raises(ValueError, match="masked-face embedder"):
        engine_embedder("sface", "scarf")


def test_the_pipeline_matches_a_masked_face_by_the_student_against_plain_templates(datasets,
                                                                                  tmp_path):
    from maskwatch.models.embedder import MaskAwareEmbedder
    from maskwatch.ops.synthmask import MaskStyle, render_mask
    from maskwatch.pipeline import Pipeline, PipelineConfig
    from maskwatch.recognition import EmbeddingMatcher

    root = datasets / "identity-examples" / "examples" / "knn_examples" / "train" / "obama"
    sface = SFaceEmbedder(backend="onnxruntime", threads=1)
    student = SFaceEmbedder(model_path=_changed_student(tmp_path / "s.onnx"), backend="onnxruntime",
                            threads=1)
    both = MaskAwareEmbedder(sface, student)
    det = YuNetDetector()
    enrol = read_image(root / "obama.jpg")
    face = det.detect(enrol)[:1]
    style = MaskStyle("surgical", (226, 196, 150), "pleats", 1.0, True)
    masked_enrol = render_mask(enrol, face.landmarks[0], face.boxes[0], style=style)
    templates = np.concatenate([sface.embed(enrol, face), sface.embed(masked_enrol, face)])
    matcher = EmbeddingMatcher.from_arrays(["obama", "obama"], templates, [False, True],
                                           threshold=-1.0, masked_threshold=-1.0)
    probe = read_image(root / "obama2.jpg")
    pface = det.detect(probe)[:1]
    masked_probe = render_mask(probe, pface.landmarks[0], pface.boxes[0], style=style)
    engine = Pipeline(PipelineConfig.accurate(), embedder=both, matcher=matcher)
    result = engine.process(masked_probe)
    assert (result.faces.mask_labels.tolist() == ["with_mask"]
            and result.faces.names.tolist() == ["obama"])
    found = result.faces[:1]
    by_student = student.embed(masked_probe, found)[0] @ templates[0]  # against the plain template
    assert result.faces.similarities[0] == pytest.approx(float(by_student), abs=1e-4)
    assert abs(float(sface.embed(masked_probe, found)[0] @ templates[1]) - float(by_student)) > 1e-3
