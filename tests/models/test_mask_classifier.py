import numpy as np
import pytest

from maskwatch.models.mask_classifier import MaskClassifier, ModelInfo, default_model_path
from maskwatch.types import MASK_CLASSES, Faces


def test_model_info_round_trip():
    info = ModelInfo(input_size=96, margin=0.2, backbone="x", data={"n": 3}, metrics={"acc": 0.5})
    back = ModelInfo.from_json(info.to_json())
    assert back == info


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"format": 99}', "newer"),
        ('{"input_size": 2}', "incomplete"),
        ('{"mean": [1, 2]}', "incomplete"),
    ],
)
def test_model_info_rejects_bad_metadata(text, message):
    with pytest.raises(ValueError, match=message):
        ModelInfo.from_json(text)


def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        MaskClassifier(tmp_path / "none.onnx")


@pytest.fixture(scope="module")
def shipped():
    if not default_model_path().is_file():
        pytest.fail("the shipped model is missing from the package")
    return MaskClassifier()


def test_shipped_model_describes_itself(shipped):
    info = shipped.info
    assert info.class_names == list(MASK_CLASSES)
    assert info.backbone and info.input_size >= 32
    assert info.metrics, "the shipped model carries its test metrics"


def test_classify_empty_and_shapes(shipped):
    img = np.zeros((100, 100, 3), np.uint8)
    assert shipped.classify(img, Faces()).mask_probs.shape[0] == 0
    out = shipped.classify(img, Faces(boxes=[[10, 10, 60, 60], [0, 0, 100, 100]]))
    assert out.mask_probs.shape == (2, 3)
    np.testing.assert_allclose(out.mask_probs.sum(1), 1.0, atol=1e-5)


def test_synthetic_masks_on_real_faces(datasets, shipped):
    """Unmasked LFW faces and the same faces with a rendered mask are told apart."""
    from maskwatch.models.detector import YuNetDetector
    from maskwatch.ops.image import read_image
    from maskwatch.ops.synthmask import render_mask

    det = YuNetDetector()
    rng = np.random.default_rng(123)
    people = sorted((datasets / "lfw-identities" / "images").iterdir())[-8:]  # a few people
    right, total = 0, 0
    for person in people:
        img = read_image(sorted(person.glob("*.jpg"))[-1])
        faces = det.detect(img)
        if not len(faces):
            continue
        i = int(np.argmax(faces.widths))
        masked = render_mask(img, faces.landmarks[i], faces.boxes[i], position="proper", rng=rng)
        plain_cls = shipped.classify(img, faces[i]).mask_labels[0]
        masked_cls = shipped.classify(masked, faces[i]).mask_labels[0]
        right += (plain_cls == "without_mask") + (masked_cls == "with_mask")
        total += 2
    assert total >= 12
    assert right / total >= 0.85
