"""SFace embeddings in every backend (OpenVINO and onnxruntime on folded fp32 weights,
OpenCV) on real photos.

They must agree to cosine >= 0.9999 on real faces: they share the embedder's name and
version, so templates enrolled with one are matched against probes of another.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from maskwatch.models.detector import YuNetDetector
from maskwatch.models.embedder import SFaceEmbedder, create_embedder
from maskwatch.ops.image import read_image

onnx = pytest.importorskip("onnx", reason="the onnxruntime backend needs the onnx package")

AGREEMENT = 0.9999  # least cosine between the backends' embeddings of one face


HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
FP32 = ["openvino", "onnxruntime"] if HAS_OPENVINO else ["onnxruntime"]


@pytest.fixture(scope="module")
def backends() -> dict[str, SFaceEmbedder]:
    return {b: SFaceEmbedder(backend=b) for b in (*FP32, "opencv")}


@pytest.fixture(scope="module")
def photos(datasets: Path) -> dict[Path, tuple[np.ndarray, object]]:
    """Every photo of identity-examples with the faces YuNet finds in it."""
    det = YuNetDetector(max_side=1280)
    root = datasets / "identity-examples" / "examples"
    found = {}
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"}):
        image = read_image(path)
        found[path] = (image, det.detect(image))
    assert sum(len(f) for _, f in found.values()) >= 20
    return found


@pytest.mark.parametrize("backend", FP32)
def test_backends_agree_on_real_faces(backends, photos, backend):
    ours, opencv = backends[backend], backends["opencv"]
    assert ours.backend == backend and opencv.backend == "opencv"
    assert (ours.name, ours.version) == (opencv.name, opencv.version) == ("sface-2021dec-int8", "1")
    cosines = []
    for image, faces in photos.values():
        a, b = ours.embed(image, faces), opencv.embed(image, faces)
        assert a.shape == b.shape == (len(faces), 128) and a.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
        cosines.extend((a * b).sum(axis=1))
    assert min(cosines) >= AGREEMENT, f"least cosine {min(cosines):.6f} over {len(cosines)} faces"


@pytest.mark.parametrize("backend", FP32)
def test_a_batch_gives_what_one_face_at_a_time_gives(backends, photos, backend):
    emb = SFaceEmbedder(backend=backend, batch_size=4)  # full batches and a partial one
    crops = np.concatenate([emb.align(*photos[p]) for p in sorted(photos)])
    assert len(crops) % 4 and len(crops) > 4
    together = emb.embed_aligned(crops)
    alone = np.concatenate([backends[backend].embed_aligned(c[None]) for c in crops])
    np.testing.assert_allclose(together, alone, atol=1e-5)


@pytest.mark.parametrize("backend", [*FP32, "opencv"])
def test_same_person_is_closer_than_other_people(backends, datasets, backend):
    emb = backends[backend]
    det = YuNetDetector(max_side=1280)
    train = datasets / "identity-examples" / "examples" / "knn_examples" / "train"
    people, vectors = [], []
    for path in sorted(train.glob("*/*")):
        image = read_image(path)
        faces = det.detect(image)
        faces = faces[int(np.argmax(faces.widths * faces.heights))]
        people.append(path.parent.name)
        vectors.append(emb.embed(image, faces)[0])
    sims = np.stack(vectors) @ np.stack(vectors).T
    same = np.array(people)[:, None] == np.array(people)[None, :]
    np.fill_diagonal(same, False)
    other = np.array(people)[:, None] != np.array(people)[None, :]
    assert same.any()
    # every photo's own person scores above everyone else, and clearly so
    for i in range(len(people)):
        if same[i].any():
            assert sims[i][same[i]].min() > sims[i][other[i]].max() + 0.1, people[i]
    assert sims[same].min() > 0.45 and sims[other].max() < 0.3


def test_auto_picks_the_fastest_installed_backend():
    expected = "openvino" if HAS_OPENVINO else "onnxruntime"
    assert SFaceEmbedder().backend == expected
    assert create_embedder("sface").backend == expected


def test_auto_falls_back_to_onnxruntime_without_openvino(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # what Python does when it is not installed
    assert SFaceEmbedder().backend == "onnxruntime"
    with pytest.raises(ImportError, match="pip install openvino"):
        SFaceEmbedder(backend="openvino")


def test_auto_falls_back_to_opencv_without_onnx(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # what Python does when onnx is not installed
    assert SFaceEmbedder().backend == "opencv"
    for backend in ("openvino", "onnxruntime"):
        with pytest.raises(ImportError, match="pip install onnx"):
            SFaceEmbedder(backend=backend)


@pytest.mark.parametrize("backend", FP32)
def test_one_embedder_shared_by_threads_gives_each_its_own_answer(backends, photos, backend):
    emb = backends[backend]
    crops = np.concatenate([emb.align(*photos[p]) for p in sorted(photos)])
    alone = [emb.embed_aligned(c[None]) for c in crops]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda c: emb.embed_aligned(c[None]), list(crops) * 3))
    for i, got in enumerate(together):
        np.testing.assert_allclose(got, alone[i % len(crops)], atol=1e-5)


def test_bad_arguments_give_one_clear_error(tmp_path, backends):
    with pytest.raises(ValueError, match="unknown SFace backend"):
        SFaceEmbedder(backend="tensorrt")
    with pytest.raises(FileNotFoundError, match="SFace model not found"):
        SFaceEmbedder(model_path=tmp_path / "missing.onnx")
    for emb in backends.values():
        with pytest.raises(ValueError, match=r"\(N, 112, 112, 3\)"):
            emb.embed_aligned(np.zeros((2, 64, 64, 3), np.uint8))
        assert emb.embed_aligned(np.zeros((0, 112, 112, 3), np.uint8)).shape == (0, 128)


@pytest.mark.parametrize("backend", FP32)
def test_the_fp32_backends_do_not_import_torch(backend):
    code = ("import sys; from maskwatch.models.embedder import SFaceEmbedder; "
            f"e = SFaceEmbedder(backend={backend!r}); assert e.backend == {backend!r}; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
