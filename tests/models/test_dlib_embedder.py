"""The optional dlib backend (dlib's ResNet descriptor, face_recognition) on real photos.

Skips when the [dlib] extra / face_recognition is not installed or the shared data is
absent; the message about a missing backend is tested in tests/cli/test_dlib_cli.py.
"""

import numpy as np
import pytest

from maskwatch.models.detector import YuNetDetector, create_detector
from maskwatch.models.embedder import EMBEDDERS, create_embedder
from maskwatch.ops.image import read_image
from maskwatch.types import Faces

pytest.importorskip("face_recognition",
                    reason="the [dlib] extra and face_recognition (--no-deps) are not installed",
                    exc_type=ImportError)

from maskwatch.models.dlib_embedder import DlibEmbedder, boxes_to_css  # noqa: E402
from maskwatch.models.hog_detector import HogDetector  # noqa: E402


@pytest.fixture(scope="module")
def dlib_embedder():
    return DlibEmbedder()


@pytest.fixture(scope="module")
def hog():
    return HogDetector()


@pytest.fixture(scope="module")
def yunet():
    return YuNetDetector()


@pytest.fixture(scope="module")
def train(datasets):
    return datasets / "identity-examples" / "examples" / "knn_examples" / "train"


def largest(faces: Faces) -> Faces:
    return faces[int(np.argmax(faces.widths * faces.heights))]


def test_factories_know_the_dlib_backend():
    assert "dlib" in EMBEDDERS
    emb = create_embedder("dlib")
    assert (emb.name, emb.version, emb.dim) == ("dlib-resnet-v1", "1", 128)
    assert create_detector("hog").name == "hog"
    with pytest.raises(ValueError, match="unknown embedder"):
        create_embedder("arcface")


def test_boxes_to_css_clips_to_the_image():
    css = boxes_to_css(np.array([[-5, 10, 300, 50.6]], np.float32), (100, 200, 3))
    assert css == [(10, 200, 51, 0)]  # (top, right, bottom, left)


def test_no_faces_and_blank_images(dlib_embedder, hog):
    blank = np.zeros((240, 320, 3), np.uint8)
    assert dlib_embedder.embed(blank, Faces()).shape == (0, 128)
    assert len(hog.detect(blank)) == 0
    assert len(hog.detect(np.zeros((1, 1, 3), np.uint8))) == 0
    with pytest.raises(ValueError, match="BGR uint8"):
        hog.detect(np.zeros((50, 50), np.uint8))


def test_same_person_closer_than_different_people(train, yunet, dlib_embedder):
    photos = {
        "biden": ["biden/biden.jpg", "biden/biden2.jpg"],
        "obama": ["obama/obama.jpg", "obama/obama2.jpg"],
        "kit": ["kit_harington/john1.jpeg", "kit_harington/john2.jpeg"],
        "rose": ["rose_leslie/img1.jpg", "rose_leslie/img2.jpg"],
    }
    emb, who = [], []
    for person, files in photos.items():
        for f in files:
            img = read_image(train / f)
            e = dlib_embedder.embed(img, largest(yunet.detect(img)))
            assert e.shape == (1, 128) and e.dtype == np.float32
            assert abs(float(np.linalg.norm(e)) - 1.0) < 1e-5
            emb.append(e[0])
            who.append(person)
    e = np.array(emb)
    sims = e @ e.T
    same = np.array(who)[:, None] == np.array(who)[None, :]
    np.fill_diagonal(same, False)
    different = np.array(who)[:, None] != np.array(who)[None, :]
    for i in range(len(who)):  # every photo's own person beats everybody else
        assert sims[i][same[i]].max() > sims[i][different[i]].max(), who[i]
    # dlib's own scale: same person under its "typical" 0.6, different people over it
    raw = np.array([dlib_embedder.embed_raw(
                        read_image(train / photos[p][i]),
                        largest(yunet.detect(read_image(train / photos[p][i]))))[0]
                    for p in ("obama", "biden") for i in (0, 1)])
    assert np.linalg.norm(raw[0] - raw[1]) < 0.6 and np.linalg.norm(raw[2] - raw[3]) < 0.6
    assert np.linalg.norm(raw[0] - raw[2]) > 0.6
    # the length the threshold conversion assumes
    assert 1.2 < np.linalg.norm(raw, axis=1).mean() < 1.7


@pytest.mark.parametrize("photo, count", [("obama.jpg", 1), ("biden.jpg", 1),
                                          ("two_people.jpg", 2)])
def test_hog_finds_unmasked_faces(datasets, hog, yunet, photo, count):
    img = read_image(datasets / "identity-examples" / "examples" / photo)
    faces = hog.detect(img)
    assert len(faces) == count
    assert faces.has_landmarks
    lm = faces.landmarks
    assert ((lm[..., 0] >= faces.boxes[:, None, 0] - 5)
            & (lm[..., 0] <= faces.boxes[:, None, 2] + 5)).all()
    # the five points agree with YuNet's on the same faces (within 12% of the face width)
    ref = yunet.detect(img)
    for i in range(len(faces)):
        cx = faces.boxes[i, [0, 2]].mean()
        j = int(np.argmin(np.abs(ref.boxes[:, [0, 2]].mean(1) - cx)))
        err = np.linalg.norm(faces.landmarks[i] - ref.landmarks[j], axis=1) / ref.widths[j]
        assert err.max() < 0.12, err
        assert lm[i, 0, 0] < lm[i, 1, 0]  # eye on the image's left first


def test_hog_and_yunet_boxes_give_nearly_the_same_descriptor(datasets, hog, yunet, dlib_embedder):
    img = read_image(datasets / "identity-examples" / "examples" / "obama.jpg")
    a = dlib_embedder.embed(img, hog.detect(img))[0]
    b = dlib_embedder.embed(img, largest(yunet.detect(img)))[0]
    assert float(a @ b) > 0.98
