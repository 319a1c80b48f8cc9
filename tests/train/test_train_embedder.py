"""maskwatch train-embedder: SFace in torch, the student file, and a small real run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training tests need the [train] extra")
pytest.importorskip("onnx", reason="the student file needs onnx")

from maskwatch.models._ort import cpu_session  # noqa: E402
from maskwatch.models.detector import YuNetDetector  # noqa: E402
from maskwatch.models.embedder import SFaceEmbedder, sface_fp32_model  # noqa: E402
from maskwatch.ops.image import list_images, read_image  # noqa: E402
from maskwatch.train.embedder import (  # noqa: E402
    EmbedderTrainConfig,
    is_validation,
    masked_rank1,
    train_embedder,
    validation_protocol,
)
from maskwatch.train.sface_torch import (  # noqa: E402
    META_NAME,
    META_SPACE,
    META_VERSION,
    load_sface,
    write_student,
)


def _aligned_faces(datasets: Path, n: int = 12) -> np.ndarray:
    emb = SFaceEmbedder(backend="onnxruntime", threads=1)
    det = YuNetDetector()
    crops = []
    for person in sorted((datasets / "lfw-identities" / "images").iterdir())[:n]:
        image = read_image(list_images(person)[0])
        faces = det.detect(image)
        if len(faces):
            crops.append(emb.align(image, faces[:1])[0])
    return np.stack(crops)


def _torch_embed(net, crops: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(crops[:, :, :, ::-1].transpose(0, 3, 1, 2),
                                              dtype=np.float32))
    with torch.no_grad():
        y = net(x).numpy()
    return y / np.linalg.norm(y, axis=1, keepdims=True)


def test_sface_in_torch_gives_the_runtime_embeddings(datasets):
    crops = _aligned_faces(datasets)
    net = load_sface()
    assert net.units == 27 and net.nodes[-2].op == "Gemm"
    got = _torch_embed(net, crops)
    ref = SFaceEmbedder(backend="onnxruntime", threads=1).embed_aligned(crops)
    assert np.min(np.sum(got * ref, axis=1)) > 0.9999
    # prefix + tail is the whole network, wherever it is cut
    x = torch.rand(2, 3, 112, 112) * 255
    cut = net.unit_start(24)
    with torch.no_grad():
        assert torch.allclose(net.tail(net.prefix(x, cut), cut), net(x), atol=1e-4)


def test_student_file_is_small_self_describing_and_runs_as_trained(datasets, tmp_path):
    crops = _aligned_faces(datasets)
    net = load_sface()
    # change the head so that a file ignoring the trained values would be caught
    gemm = net.nodes[-2]
    with torch.no_grad():
        gemm.value(0).mul_(torch.linspace(0.5, 1.5, gemm.value(0).shape[1]))
    path = write_student(net, tmp_path / "s.onnx", name="student-x", version="7",
                         space="sface-2021dec-int8")
    assert path.stat().st_size < 20e6
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta == {META_NAME: "student-x", META_VERSION: "7", META_SPACE: "sface-2021dec-int8"}
    session = cpu_session(sface_fp32_model(path), 1)
    x = np.ascontiguousarray(crops[:, :, :, ::-1].transpose(0, 3, 1, 2), dtype=np.float32)
    y = session.run(None, {session.get_inputs()[0].name: x})[0]
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    trained = _torch_embed(net, crops)
    sface = SFaceEmbedder(backend="onnxruntime", threads=1).embed_aligned(crops)
    assert np.min(np.sum(y * trained, axis=1)) > 0.999  # int8 weights cost almost nothing
    assert np.max(np.sum(y * sface, axis=1)) < 0.999  # and they are the trained ones, not SFace's


def test_validation_people_are_a_stable_share_of_lfw_train_only():
    people = [f"lfw-train/images/person_{i}" for i in range(4000)]
    val = [is_validation(p, 0.05) for p in people]
    assert 0.035 < np.mean(val) < 0.065
    assert val == [is_validation(p, 0.05) for p in people]
    assert not is_validation("mask-classification/without_mask/x.jpg", 1.0)
    g_rows, g_pid, p_rows, p_pid = validation_protocol(["a", "a", "b", "c", "c", "c"])
    assert (list(g_rows) == [0, 3] and list(p_rows) == [1, 4, 5]
            and list(p_pid) == [g_pid[0], *[g_pid[1]] * 2])
    gallery = np.eye(3, dtype=np.float32)[:2]
    probes = np.array([[1, 0.1, 0], [0.9, 0.2, 0], [0, 1, 0]], np.float32)
    assert (masked_rank1(gallery, np.array([0, 1]), probes, np.array([0, 1, 1]))
            == pytest.approx(2 / 3))


def _small_datasets(datasets: Path, root: Path) -> Path:
    """lfw-train people with 2 or more photos (so validation has probes), copied to ``root``."""
    src = datasets / "lfw-train" / "images"
    people = [p for p in sorted(src.iterdir()) if len(list_images(p)) >= 2][:14]
    for person in people:
        shutil.copytree(person, root / "lfw-train" / "images" / person.name)
    return root


def test_a_small_run_writes_its_student_and_report_and_resumes(datasets, tmp_path):
    data = _small_datasets(datasets, tmp_path / "data")
    config = EmbedderTrainConfig(
        datasets=data, out=tmp_path / "run", mask_templates=datasets / "mask-templates",
        masks_per_face=2, epochs=2, batch=8, val_people=0.3, progress=False, threads=1,
        sources=["lfw-train/images"])
    res = train_embedder(config)
    out = tmp_path / "run"
    for name in ("student.onnx", "report.md", "history.json", "metadata.json", "curves.png",
                 "checkpoint.pt"):
        assert (out / name).is_file(), name
    history = json.loads((out / "history.json").read_text())
    assert history["epoch"] == [1, 2]
    assert res["faces"] > 20 and res["val_faces"] > 0 and res["train_faces"] > 0
    assert res["masked_total"] == 2 * res["faces"]
    assert res["onnx"]["min_cos_int8_vs_float"] > 0.999
    report = (out / "report.md").read_text()
    assert "Model card" in report and "| SFace |" in report
    # the student is trained: its loss went down from where SFace started
    assert (history["train_masked_loss"][-1]
            < 1 - res["teacher_on_validation"]["val_masked_cos"] + 0.05)
    # a second start with the same settings resumes: no stage is run again
    crops_stamp = (out / "cache" / "crops.json").stat().st_mtime_ns
    again = train_embedder(config)
    assert (out / "cache" / "crops.json").stat().st_mtime_ns == crops_stamp
    assert json.loads((out / "history.json").read_text()) == history
    assert again["best"] == res["best"]
