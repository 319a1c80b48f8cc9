import numpy as np
import pytest

from maskwatch.types import MASK_CLASSES, Faces


def test_empty_faces_have_shapes_not_none():
    f = Faces()
    assert len(f) == 0
    assert f.boxes.shape == (0, 4)
    assert f.landmarks.shape == (0, 5, 2)
    assert f.mask_classes == []
    assert f.to_list() == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"boxes": [[0, 0, 1, 1]], "scores": [0.1, 0.2]}, "scores"),
        ({"boxes": [[0, 0, 1, 1]], "landmarks": np.zeros((2, 5, 2))}, "landmarks"),
        ({"boxes": [[0, 0, 1, 1]], "mask_probs": np.zeros((3, 3))}, "mask_probs"),
        ({"boxes": [[0, 0, 1, 1]], "track_ids": [1, 2]}, "track"),
    ],
)
def test_mismatched_fields_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Faces(**kwargs)


def test_filter_and_fields():
    f = Faces(
        boxes=[[0, 0, 10, 20], [5, 5, 45, 35]],
        scores=[0.9, 0.5],
        landmarks=np.ones((2, 5, 2)),
        mask_probs=[[0.8, 0.1, 0.1], [0.1, 0.2, 0.7]],
    )
    assert f.widths.tolist() == [10, 40]
    assert f.sizes.tolist() == [10, 30]
    assert f.mask_classes == ["with_mask", "mask_incorrect"]
    g = f[f.scores > 0.6]
    assert len(g) == 1 and g.mask_classes == ["with_mask"]
    assert f[1].boxes.tolist() == [[5, 5, 45, 35]]
    item = f.to_list()[1]
    assert item["mask"] == "mask_incorrect"
    assert set(item["mask_probs"]) == set(MASK_CLASSES)
    assert "track_id" not in item
    assert len(Faces.concatenate([f, Faces(), f])) == 4
