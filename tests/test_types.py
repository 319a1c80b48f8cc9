import numpy as np
import pytest

from maskwatch.types import MASK_CLASSES, Faces


def test_empty_faces_have_shapes_not_none():
    f = Faces()
    assert len(f) == 0
    assert f.boxes.shape == (0, 4)
    assert f.landmarks.shape == (0, 5, 2)
    assert f.mask_labels.tolist() == []
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
    assert f.mask_labels.tolist() == ["with_mask", "mask_incorrect"]
    g = f[f.scores > 0.6]
    assert len(g) == 1 and g.mask_labels.tolist() == ["with_mask"]
    assert f[1].boxes.tolist() == [[5, 5, 45, 35]]
    item = f.to_list()[1]
    assert item["mask"] == "mask_incorrect"
    assert set(item["mask_probs"]) == set(MASK_CLASSES)
    assert "track_id" not in item
    assert len(Faces.concatenate([f, Faces(), f])) == 4


def test_one_result_per_face():
    f = Faces(boxes=[[0, 0, 10, 20], [5, 5, 45, 35]], mask_probs=[[0.8, 0.1, 0.1], [0.1, 0.2, 0.7]])
    assert f.names.tolist() == [None, None] and np.isnan(f.similarities).all()
    g = f.with_fields(mask_labels=["without_mask", None], names=["Ann", None],
                      similarities=[0.61, None])
    # the shown label (a track's stable one) wins over the argmax, in the JSON too
    assert [item.get("mask") for item in g.to_list()] == ["without_mask", None]
    assert g.to_list()[0]["identity"] == "Ann" and g.to_list()[0]["similarity"] == 0.61
    assert "identity" not in g.to_list()[1] and "similarity" not in g.to_list()[1]
    # selection and joining keep every per-face field aligned
    assert g[np.array([False, True])].names.tolist() == [None]
    assert Faces.concatenate([g, f]).names.tolist() == ["Ann", None, None, None]
    # new probabilities without new labels: the labels follow the probabilities
    h = g.with_fields(mask_probs=[[0.1, 0.1, 0.8], [0.9, 0.05, 0.05]])
    assert (h.mask_labels.tolist() == ["mask_incorrect", "with_mask"]
            and h.names.tolist() == ["Ann", None])
    with pytest.raises(ValueError, match="names"):
        f.with_fields(names=["Ann"])
    with pytest.raises(ValueError, match="mask_labels"):
        f.with_fields(mask_labels=["masked", None])


def test_a_face_that_cannot_be_judged_keeps_its_probabilities():
    from maskwatch.types import MASK_LABELS, SHOWN_MASK_STATES, UNKNOWN_MASK

    assert UNKNOWN_MASK == "unknown" and UNKNOWN_MASK not in MASK_CLASSES
    assert SHOWN_MASK_STATES == (*MASK_CLASSES, UNKNOWN_MASK)
    assert MASK_LABELS[UNKNOWN_MASK] == "cannot judge"
    f = Faces(boxes=[[0, 0, 10, 20], [5, 5, 45, 35]], mask_probs=[[0.8, 0.1, 0.1], [0.1, 0.2, 0.7]],
              mask_labels=[UNKNOWN_MASK, "mask_incorrect"])
    item = f.to_list()[0]
    assert item["mask"] == "unknown" and item["mask_probs"]["with_mask"] == 0.8
    assert f[np.array([True, False])].mask_labels.tolist() == [UNKNOWN_MASK]
