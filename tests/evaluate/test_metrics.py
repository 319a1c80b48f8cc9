"""Tests for maskwatch.evaluate.metrics, with hand-computed expected values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from maskwatch.evaluate.metrics import (
    SIZE_BINS,
    classification_report,
    confusion_matrix,
    expected_calibration_error,
    format_classification_report,
    mask_vs_no_mask,
    results_by_size,
)

NAMES = ("with_mask", "without_mask", "mask_incorrect")
WM, NM, MI = 0, 1, 2  # with_mask, without_mask, mask_incorrect

# Worked example used throughout.
#   confusion (rows true, cols pred):  with   without  incorrect
#     with_mask         (support 3)       2      0        1
#     without_mask      (support 3)       1      2        0
#     mask_incorrect    (support 4)       1      1        2
#   predicted totals                      4      3        3
# precision = 2/4, 2/3, 2/3; recall = 2/3, 2/3, 2/4; F1 = 4/7, 2/3, 4/7; accuracy 6/10.
Y_TRUE = [WM, WM, WM, NM, NM, MI, MI, MI, MI, NM]
Y_PRED = [WM, WM, MI, NM, WM, MI, MI, WM, NM, NM]
CM = [[2, 0, 1], [1, 2, 0], [1, 1, 2]]


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


# --------------------------------------------------------------------------- confusion


@pytest.mark.parametrize(
    ("y_true", "y_pred", "n", "expected"),
    [
        (Y_TRUE, Y_PRED, 3, CM),
        ([0, 1, 1], [1, 1, 0], 2, [[0, 1], [1, 1]]),
        ([2, 2], [2, 2], 3, [[0, 0, 0], [0, 0, 0], [0, 0, 2]]),
        ([], [], 3, [[0, 0, 0], [0, 0, 0], [0, 0, 0]]),
        (np.array([1.0, 0.0]), np.array([1, 1], np.int32), 2, [[0, 1], [0, 1]]),
    ],
)
def test_confusion_matrix(y_true, y_pred, n, expected):
    cm = confusion_matrix(y_true, y_pred, n)
    assert cm.dtype == np.int64
    assert cm.shape == (n, n)
    assert cm.tolist() == expected


@pytest.mark.parametrize(
    ("y_true", "y_pred", "n"),
    [
        ([0, 1], [0], 3),  # length mismatch
        ([0, 3], [0, 1], 3),  # label out of range
        ([0, -1], [0, 1], 3),  # negative label
        ([0, 0.5], [0, 1], 3),  # not a whole number
    ],
)
def test_confusion_matrix_rejects_bad_input(y_true, y_pred, n):
    with pytest.raises(ValueError):
        confusion_matrix(y_true, y_pred, n)


# --------------------------------------------------------------------------- report


@pytest.mark.parametrize(
    ("name", "precision", "recall", "f1", "support"),
    [
        ("with_mask", 2 / 4, 2 / 3, 4 / 7, 3),
        ("without_mask", 2 / 3, 2 / 3, 2 / 3, 3),
        ("mask_incorrect", 2 / 3, 2 / 4, 4 / 7, 4),
    ],
)
def test_classification_report_per_class(name, precision, recall, f1, support):
    m = classification_report(Y_TRUE, Y_PRED, NAMES)["classes"][name]
    assert _close(m["precision"], precision)
    assert _close(m["recall"], recall)
    assert _close(m["f1"], f1)
    assert m["support"] == support


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (("accuracy",), 0.6),
        (("n",), 10),
        (("macro_avg", "precision"), 11 / 18),
        (("macro_avg", "recall"), 11 / 18),
        (("macro_avg", "f1"), 38 / 63),
        (("macro_avg", "support"), 10),
        (("weighted_avg", "precision"), 0.3 * 0.5 + 0.3 * 2 / 3 + 0.4 * 2 / 3),
        (("weighted_avg", "recall"), 0.6),
        (("weighted_avg", "f1"), 0.6),
        (("weighted_avg", "support"), 10),
    ],
)
def test_classification_report_summary(key, expected):
    value = classification_report(Y_TRUE, Y_PRED, NAMES)
    for k in key:
        value = value[k]
    assert _close(value, expected)


@pytest.mark.parametrize(
    ("y_true", "y_pred", "expected"),
    [
        # class 1 and 2 never predicted: precision 0/0 -> 0; class 0 P=1/3, R=1, F1=1/2
        (
            [0, 1, 2],
            [0, 0, 0],
            {
                "with_mask": (1 / 3, 1.0, 0.5, 1),
                "without_mask": (0.0, 0.0, 0.0, 1),
                "mask_incorrect": (0.0, 0.0, 0.0, 1),
            },
        ),
        # classes 1 and 2 absent everywhere: every metric 0 (not NaN)
        (
            [0, 0],
            [0, 0],
            {
                "with_mask": (1.0, 1.0, 1.0, 2),
                "without_mask": (0.0, 0.0, 0.0, 0),
                "mask_incorrect": (0.0, 0.0, 0.0, 0),
            },
        ),
        # class 2 predicted but never true: precision 0/1 = 0, recall 0/0 -> 0
        (
            [0, 1],
            [2, 1],
            {
                "with_mask": (0.0, 0.0, 0.0, 1),
                "without_mask": (1.0, 1.0, 1.0, 1),
                "mask_incorrect": (0.0, 0.0, 0.0, 0),
            },
        ),
        # empty input
        (
            [],
            [],
            {
                "with_mask": (0.0, 0.0, 0.0, 0),
                "without_mask": (0.0, 0.0, 0.0, 0),
                "mask_incorrect": (0.0, 0.0, 0.0, 0),
            },
        ),
    ],
)
def test_classification_report_zero_division(y_true, y_pred, expected):
    rep = classification_report(y_true, y_pred, NAMES)
    for name, (p, r, f, s) in expected.items():
        m = rep["classes"][name]
        assert (m["precision"], m["recall"], m["f1"], m["support"]) == pytest.approx((p, r, f, s))
    # JSON-safe: no NaN anywhere, plain Python types.
    text = json.dumps(rep, allow_nan=False)
    assert "NaN" not in text
    assert type(rep["accuracy"]) is float and type(rep["n"]) is int


def test_classification_report_empty_summary():
    rep = classification_report([], [], NAMES)
    assert rep["n"] == 0
    assert rep["accuracy"] == 0.0
    assert rep["macro_avg"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert rep["weighted_avg"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_format_classification_report_is_aligned():
    rep = classification_report(Y_TRUE, Y_PRED, NAMES)
    text = format_classification_report(rep)
    lines = [line for line in text.splitlines() if line.strip()]
    assert len({len(line) for line in lines}) == 1, text
    for word in (
        *NAMES,
        "precision",
        "recall",
        "f1-score",
        "support",
        "accuracy",
        "macro avg",
        "weighted avg",
    ):
        assert word in text
    acc_line = next(line for line in lines if line.strip().startswith("accuracy"))
    assert acc_line.split()[-2:] == ["0.600", "10"]
    wm_line = next(line for line in lines if line.strip().startswith("with_mask"))
    assert wm_line.split()[1:] == ["0.500", "0.667", "0.571", "3"]
    assert "0.60 " in format_classification_report(rep, digits=2)


# --------------------------------------------------------------------------- two-class view


@pytest.mark.parametrize(
    ("t", "p", "correct"),
    [
        (WM, WM, True),
        (WM, MI, True),  # incorrectly worn mask still counts as "mask"
        (MI, WM, True),
        (MI, MI, True),
        (NM, NM, True),
        (WM, NM, False),
        (MI, NM, False),
        (NM, WM, False),
        (NM, MI, False),
    ],
)
def test_mask_vs_no_mask_mapping(t, p, correct):
    two = mask_vs_no_mask([t], [p], NAMES)
    assert two["n"] == 1
    assert two["accuracy"] == (1.0 if correct else 0.0)
    true_row = 1 if t == NM else 0
    pred_col = 1 if p == NM else 0
    expected = [[0, 0], [0, 0]]
    expected[true_row][pred_col] = 1
    assert two["confusion"] == expected


def test_mask_vs_no_mask_worked_example():
    # mask = {with_mask, mask_incorrect}. confusion [[6, 1], [1, 2]], accuracy 8/10.
    two = mask_vs_no_mask(Y_TRUE, Y_PRED, NAMES)
    assert two["labels"] == ["mask", "no_mask"]
    assert two["confusion"] == [[6, 1], [1, 2]]
    assert _close(two["accuracy"], 0.8)
    assert two["n"] == 10
    mask, no_mask = two["classes"]["mask"], two["classes"]["no_mask"]
    assert (mask["precision"], mask["recall"], mask["f1"], mask["support"]) == pytest.approx(
        (6 / 7, 6 / 7, 6 / 7, 7)
    )
    assert (no_mask["precision"], no_mask["recall"], no_mask["support"]) == pytest.approx(
        (2 / 3, 2 / 3, 3)
    )
    json.dumps(two, allow_nan=False)


def test_mask_vs_no_mask_other_class_order_and_errors():
    names = ("without_mask", "mask_incorrect", "with_mask")
    two = mask_vs_no_mask([0, 1, 2], [0, 2, 0], names)
    assert two["confusion"] == [[1, 1], [0, 1]]
    assert mask_vs_no_mask([], [], NAMES)["accuracy"] == 0.0
    with pytest.raises(ValueError, match="mapping"):
        mask_vs_no_mask([0], [0], ("cat", "dog"))


# --------------------------------------------------------------------------- by size


@pytest.mark.parametrize(
    ("size", "label"),
    [
        (0.0, "<16"),
        (15.99, "<16"),
        (16.0, "16-32"),  # lower edge is inclusive
        (31.999, "16-32"),
        (32.0, "32-64"),
        (63.9, "32-64"),
        (64.0, "64+"),
        (4000.0, "64+"),
    ],
)
def test_results_by_size_edges(size, label):
    rows = results_by_size([WM], [WM], [size], NAMES)
    assert [r["bin"] for r in rows] == ["<16", "16-32", "32-64", "64+"]
    counts = {r["bin"]: r["n"] for r in rows}
    assert counts == {b: (1 if b == label else 0) for b in counts}


def test_results_by_size_metrics_and_empty_bins():
    # bins: "<16" = first 2 faces, "16-32" = next 3, "32-64" = none, "64+" = last 2
    y_true = [WM, MI, NM, NM, WM, MI, WM]
    y_pred = [MI, MI, NM, WM, WM, MI, MI]
    sizes = [10, 12, 16, 20, 31, 64, 100]
    rows = {r["bin"]: r for r in results_by_size(y_true, y_pred, sizes, NAMES)}

    small = rows["<16"]
    assert small["n"] == 2
    assert small["accuracy"] == 0.5
    assert small["two_class_accuracy"] == 1.0  # with_mask -> mask_incorrect is still "mask"
    # classes present: with_mask (F1 0) and mask_incorrect (P 1/2, R 1, F1 2/3)
    assert _close(small["macro_f1"], (0 + 2 / 3) / 2)
    assert small["per_class_recall"] == {
        "with_mask": 0.0,
        "without_mask": None,
        "mask_incorrect": 1.0,
    }
    assert small["support"] == {"with_mask": 1, "without_mask": 0, "mask_incorrect": 1}

    mid = rows["16-32"]
    assert mid["n"] == 3
    assert _close(mid["accuracy"], 2 / 3)
    assert _close(mid["two_class_accuracy"], 2 / 3)
    # with_mask: P 1/2 R 1 F1 2/3; without_mask: P 1 R 1/2 F1 2/3
    assert _close(mid["macro_f1"], 2 / 3)
    assert mid["per_class_recall"] == {
        "with_mask": 1.0,
        "without_mask": 0.5,
        "mask_incorrect": None,
    }

    empty = rows["32-64"]
    assert empty["n"] == 0
    for key in ("accuracy", "two_class_accuracy", "macro_f1"):
        assert empty[key] is None
    assert set(empty["per_class_recall"].values()) == {None}

    assert small["confusion"] == [[0, 0, 1], [0, 0, 0], [0, 0, 1]]
    assert empty["confusion"] is None

    big = rows["64+"]
    assert big["n"] == 2 and big["accuracy"] == 0.5 and big["two_class_accuracy"] == 1.0
    json.dumps(list(rows.values()), allow_nan=False)


def test_results_by_size_excludes_out_of_range_and_custom_bins():
    rows = results_by_size([WM, WM, WM], [WM, WM, NM], [-1.0, float("nan"), 5.0], NAMES)
    assert [r["n"] for r in rows] == [1, 0, 0, 0]
    rows = results_by_size([WM, NM], [WM, WM], [8, 40], NAMES, bins=((0, 24), (24, None)))
    assert [(r["bin"], r["n"], r["accuracy"]) for r in rows] == [("<24", 1, 1.0), ("24+", 1, 0.0)]


def test_results_by_size_empty_and_unmapped_classes():
    rows = results_by_size([], [], [], NAMES)
    assert len(rows) == len(SIZE_BINS) and all(r["n"] == 0 and r["accuracy"] is None for r in rows)
    rows = results_by_size([0, 1], [0, 0], [20, 20], ("cat", "dog"))
    assert rows[1]["accuracy"] == 0.5 and rows[1]["two_class_accuracy"] is None
    with pytest.raises(ValueError):
        results_by_size([0, 1], [0, 1], [20], NAMES)


# --------------------------------------------------------------------------- calibration


def _rows(conf: float, n: int, n_correct: int) -> tuple[list[int], list[list[float]]]:
    """n rows whose top class is 0 with probability ``conf``; ``n_correct`` are labelled 0."""
    rest = (1 - conf) / 2
    probs = [[conf, rest, rest]] * n
    labels = [0] * n_correct + [1] * (n - n_correct)
    return labels, probs


def _concat(*parts):
    ys, ps = [], []
    for y, p in parts:
        ys += y
        ps += p
    return ys, np.array(ps)


@pytest.mark.parametrize(
    ("y", "probs", "n_bins", "expected"),
    [
        # perfectly calibrated: 80% right at confidence 0.8, 50% right at 0.5
        (*_concat(_rows(0.8, 10, 8), _rows(0.5, 4, 2)), 10, 0.0),
        # one-hot and always right
        ([0, 1, 2], np.eye(3), 10, 0.0),
        # overconfident: says 0.99, right half the time
        (*_concat(_rows(0.99, 10, 5)), 10, 0.49),
        # two bins: (1/2)|1 - 0.9| + (1/2)|0 - 0.6| = 0.35
        ([0, 1], np.array([[0.9, 0.05, 0.05], [0.6, 0.2, 0.2]]), 10, 0.35),
        # same bin (0.7, 0.8]: accuracy 1/2, mean confidence 0.75
        ([0, 1], np.array([[0.72, 0.14, 0.14], [0.78, 0.11, 0.11]]), 10, 0.25),
        # one bin: |accuracy - mean confidence| = |1/2 - 0.75|; the two-bin case gives 0.35
        ([0, 1], np.array([[0.9, 0.05, 0.05], [0.6, 0.2, 0.2]]), 1, 0.25),
        # underconfident: right every time at confidence 0.4
        (*_concat(_rows(0.4, 5, 5)), 10, 0.6),
        # empty
        ([], np.zeros((0, 3)), 10, 0.0),
    ],
)
def test_expected_calibration_error(y, probs, n_bins, expected):
    ece = expected_calibration_error(y, probs, n_bins=n_bins)
    assert type(ece) is float
    assert ece == pytest.approx(expected, abs=1e-9)


def test_expected_calibration_error_bin_edge_and_errors():
    # Confidence exactly 0.3 belongs to bin (0.2, 0.3] together with 0.25:
    # accuracy 1/2, mean confidence 0.275 -> 0.225 (separate bins would give 0.475).
    probs = np.array([[0.3, 0.25, 0.25, 0.2], [0.25, 0.25, 0.25, 0.25]])
    assert expected_calibration_error([0, 1], probs) == pytest.approx(0.225)
    # Confidence 1.0 goes in the last bin.
    assert expected_calibration_error([1], [[0.0, 1.0]]) == 0.0
    with pytest.raises(ValueError):
        expected_calibration_error([0, 1], np.ones((3, 3)) / 3)
    with pytest.raises(ValueError):
        expected_calibration_error([0], [[np.nan, 0.5, 0.5]])
    with pytest.raises(ValueError):
        expected_calibration_error([0], [[1.0]], n_bins=0)
