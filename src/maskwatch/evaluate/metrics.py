"""Classification metrics for the mask classifier (numpy only).

Everything here returns plain Python ``int``/``float``/``None``/``list``/``dict``
values, so results go straight into ``json.dump`` (no numpy scalars, never NaN).
Divisions by zero (a class never predicted, a class with no examples, an empty set)
give ``0.0``, as scikit-learn does with ``zero_division=0``; the size table is the one
exception and uses ``None`` for "nothing to measure" (see :func:`results_by_size`).

Labels are integer class indices into ``class_names`` (for maskwatch usually
:data:`maskwatch.types.MASK_CLASSES`: ``with_mask``, ``without_mask``,
``mask_incorrect``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Face-size bins in pixels, ``[low, high)``; ``None`` means no upper limit. The face
#: size is the shorter side of the face box. Labels: "<16", "16-32", "32-64", "64+".
SIZE_BINS: tuple[tuple[int, int | None], ...] = ((0, 16), (16, 32), (32, 64), (64, None))

#: How each 3-class mask state maps onto the binary mask / no-mask view.
TWO_CLASS_MAP: dict[str, str] = {
    "with_mask": "mask",
    "mask_incorrect": "mask",
    "without_mask": "no_mask",
}

#: Class order of the binary view (index 0 = "mask", the positive class).
TWO_CLASS_NAMES: tuple[str, str] = ("mask", "no_mask")


def _labels(y: Any, name: str, n_classes: int | None = None) -> np.ndarray:
    """``y`` as a 1-D int64 array, checked to hold whole numbers in ``[0, n_classes)``."""
    arr = np.asarray(y)
    if arr.size == 0:
        return np.zeros(0, np.int64)
    arr = arr.reshape(-1)
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold integer class indices")
    out = arr.astype(np.int64)
    if n_classes is not None and (out.min() < 0 or out.max() >= n_classes):
        raise ValueError(
            f"{name} has labels outside [0, {n_classes}): min {out.min()}, max {out.max()}"
        )
    return out


def _pair(y_true: Any, y_pred: Any, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    t = _labels(y_true, "y_true", n_classes)
    p = _labels(y_pred, "y_pred", n_classes)
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} labels but y_pred has {len(p)}")
    return t, p


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Element-wise ``num / den`` with 0.0 where ``den == 0``."""
    num = np.asarray(num, np.float64)
    den = np.asarray(den, np.float64)
    out = np.zeros(np.broadcast(num, den).shape, np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def confusion_matrix(y_true: Any, y_pred: Any, n_classes: int) -> np.ndarray:
    """Count matrix of true versus predicted labels.

    Args:
        y_true: (N,) true class indices in ``[0, n_classes)``.
        y_pred: (N,) predicted class indices in ``[0, n_classes)``.
        n_classes: number of classes C.

    Returns:
        (C, C) int64 array; ``cm[i, j]`` is the number of examples of true class ``i``
        predicted as class ``j`` (rows = true, columns = predicted). All zeros when N = 0.

    Raises:
        ValueError: lengths differ or a label is out of range.
    """
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    t, p = _pair(y_true, y_pred, n_classes)
    flat = np.bincount(t * n_classes + p, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.int64)


def _report_from_cm(cm: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _div(tp, predicted)
    recall = _div(tp, support)
    # Same as 2PR / (P + R), without 0/0 when both are 0.
    f1 = _div(2 * tp, support + predicted)
    n = int(cm.sum())
    classes = {
        str(name): {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    weights = _div(support, n)
    return {
        "classes": classes,
        "accuracy": float(_div(tp.sum(), n)),
        "macro_avg": {
            "precision": float(precision.mean()),
            "recall": float(recall.mean()),
            "f1": float(f1.mean()),
            "support": n,
        },
        "weighted_avg": {
            "precision": float((precision * weights).sum()),
            "recall": float((recall * weights).sum()),
            "f1": float((f1 * weights).sum()),
            "support": n,
        },
        "n": n,
    }


def classification_report(y_true: Any, y_pred: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """Per-class precision, recall, F1 and support, plus accuracy and averages.

    Args:
        y_true: (N,) true class indices into ``class_names``.
        y_pred: (N,) predicted class indices into ``class_names``.
        class_names: the C class names, in label order.

    Returns:
        ``{"classes": {name: {"precision", "recall", "f1", "support"}}, "accuracy",
        "macro_avg": {...}, "weighted_avg": {...}, "n"}``. Precision of a class that is
        never predicted, recall of a class with no examples, and every metric of an
        empty input are 0.0 (never NaN). ``macro_avg`` is the unweighted mean over all
        C classes (including classes absent from the data), ``weighted_avg`` weights by
        support; both carry ``"support": N``. Values are Python floats/ints.
    """
    cm = confusion_matrix(y_true, y_pred, len(class_names))
    return _report_from_cm(cm, class_names)


def format_classification_report(report: dict[str, Any], digits: int = 3) -> str:
    """Render a :func:`classification_report` dict as an aligned text table.

    The layout follows scikit-learn's ``classification_report``: one row per class,
    then accuracy, macro average and weighted average.

    Args:
        report: the dict returned by :func:`classification_report`.
        digits: decimals shown for precision, recall, F1 and accuracy.

    Returns:
        The table as a string ending with a newline.
    """
    names = list(report["classes"])
    tail = ["accuracy", "macro avg", "weighted avg"]
    width = max([len(n) for n in names + tail] + [digits])
    col = max(digits + 2, 9)
    headers = ["precision", "recall", "f1-score", "support"]
    lines = [" " * width + "".join(f"{h:>{col + 1}}" for h in headers), ""]

    def row(label: str, m: dict[str, Any]) -> str:
        vals = "".join(f"{m[k]:>{col + 1}.{digits}f}" for k in ("precision", "recall", "f1"))
        return f"{label:>{width}}{vals}{m['support']:>{col + 1}d}"

    for name in names:
        lines.append(row(name, report["classes"][name]))
    lines.append("")
    blank = " " * ((col + 1) * 2)
    lines.append(
        f"{'accuracy':>{width}}{blank}{report['accuracy']:>{col + 1}.{digits}f}"
        f"{report['n']:>{col + 1}d}"
    )
    lines.append(row("macro avg", report["macro_avg"]))
    lines.append(row("weighted avg", report["weighted_avg"]))
    return "\n".join(lines) + "\n"


def two_class_labels(class_names: Sequence[str]) -> np.ndarray:
    """Lookup table from 3-class indices to binary indices (0 = "mask", 1 = "no_mask").

    Args:
        class_names: class names in label order; each must be a key of
            :data:`TWO_CLASS_MAP` (``with_mask``, ``mask_incorrect``, ``without_mask``).

    Returns:
        (C,) int64 array ``lut`` so that ``lut[y]`` is the binary label of ``y``.

    Raises:
        ValueError: a class name has no binary meaning.
    """
    unknown = [c for c in class_names if c not in TWO_CLASS_MAP]
    if unknown:
        raise ValueError(
            f"no mask/no-mask mapping for classes {unknown}; known: {sorted(TWO_CLASS_MAP)}"
        )
    return np.array([TWO_CLASS_NAMES.index(TWO_CLASS_MAP[c]) for c in class_names], np.int64)


def mask_vs_no_mask(y_true: Any, y_pred: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """Collapse the 3-class result to the binary mask / no-mask view.

    Definition: a face is **"mask"** (the positive class) when a mask is worn at all,
    i.e. ``with_mask`` or ``mask_incorrect`` (mask below the nose); it is
    **"no_mask"** when it is ``without_mask``. Both the true and predicted labels are
    mapped this way, so confusing ``with_mask`` with ``mask_incorrect`` is *not* an
    error here. This makes the numbers comparable with binary mask/no-mask
    classifiers and datasets that do not separate incorrectly worn masks.

    Args:
        y_true: (N,) true class indices into ``class_names``.
        y_pred: (N,) predicted class indices into ``class_names``.
        class_names: class names in label order (see :data:`TWO_CLASS_MAP`).

    Returns:
        ``{"accuracy", "n", "classes": {"mask": {...}, "no_mask": {...}},
        "confusion": [[...], [...]], "labels": ["mask", "no_mask"]}`` where the class
        entries have precision/recall/f1/support as in :func:`classification_report`
        and ``confusion`` is the 2x2 count matrix (rows = true, columns = predicted,
        order ``labels``) as nested lists. ``macro_avg`` and ``weighted_avg`` are
        included too, so the dict can be passed to
        :func:`format_classification_report`.

    Raises:
        ValueError: a class name has no binary meaning, or the labels are invalid.
    """
    lut = two_class_labels(class_names)
    t, p = _pair(y_true, y_pred, len(class_names))
    t2, p2 = lut[t], lut[p]
    cm = confusion_matrix(t2, p2, 2)
    rep = _report_from_cm(cm, TWO_CLASS_NAMES)
    return {
        "accuracy": rep["accuracy"],
        "n": rep["n"],
        "classes": rep["classes"],
        "confusion": cm.tolist(),
        "labels": list(TWO_CLASS_NAMES),
        "macro_avg": rep["macro_avg"],
        "weighted_avg": rep["weighted_avg"],
    }


def size_bin_label(low: float, high: float | None) -> str:
    """Label of a size bin: ``"<16"`` for ``(0, 16)``, ``"64+"`` for ``(64, None)``,
    otherwise ``"16-32"``."""
    if high is None:
        return f"{low:g}+"
    if low == 0:
        return f"<{high:g}"
    return f"{low:g}-{high:g}"


def results_by_size(
    y_true: Any,
    y_pred: Any,
    sizes: Any,
    class_names: Sequence[str],
    bins: Sequence[tuple[float, float | None]] = SIZE_BINS,
) -> list[dict[str, Any]]:
    """Accuracy and related metrics per face-size bin.

    A face of size ``s`` falls in bin ``(low, high)`` when ``low <= s < high``
    (``high=None``: no upper limit), so with the default bins a 16 px face is in
    "16-32" and a 64 px face in "64+". Faces outside every bin (e.g. negative or NaN
    sizes) are not counted.

    Args:
        y_true: (N,) true class indices into ``class_names``.
        y_pred: (N,) predicted class indices into ``class_names``.
        sizes: (N,) face sizes in pixels, the shorter side of each face box
            (``Faces.sizes``).
        class_names: class names in label order.
        bins: ``(low, high)`` pairs, ``high=None`` for an open upper end.

    Returns:
        One dict per bin, in ``bins`` order::

            {"bin": "16-32", "low": 16, "high": 32, "n": int,
             "accuracy": float | None, "two_class_accuracy": float | None,
             "macro_f1": float | None,
             "per_class_recall": {name: float | None}, "support": {name: int},
             "confusion": [[int]] | None}

        An empty bin has ``n=0`` and ``None`` for every metric. ``macro_f1`` averages
        F1 over the classes that occur in the bin (as true or predicted label), so a
        bin without, say, ``mask_incorrect`` faces is not penalised for it;
        ``per_class_recall`` is ``None`` for a class with no faces in the bin.
        ``confusion`` is the bin's confusion matrix (rows true, columns predicted).
        ``two_class_accuracy`` is the :func:`mask_vs_no_mask` accuracy, ``None`` when
        ``class_names`` have no mask/no-mask mapping.
    """
    n_classes = len(class_names)
    t, p = _pair(y_true, y_pred, n_classes)
    s = np.asarray(sizes, np.float64).reshape(-1)
    if len(s) != len(t):
        raise ValueError(f"sizes has {len(s)} values but there are {len(t)} labels")
    try:
        lut: np.ndarray | None = two_class_labels(class_names)
    except ValueError:
        lut = None

    rows: list[dict[str, Any]] = []
    for low, high in bins:
        sel = s >= low
        if high is not None:
            sel &= s < high
        n = int(sel.sum())
        row: dict[str, Any] = {
            "bin": size_bin_label(low, high),
            "low": low,
            "high": high,
            "n": n,
            "accuracy": None,
            "two_class_accuracy": None,
            "macro_f1": None,
            "per_class_recall": {str(c): None for c in class_names},
            "support": {str(c): 0 for c in class_names},
            "confusion": None,
        }
        if n:
            tb, pb = t[sel], p[sel]
            cm = confusion_matrix(tb, pb, n_classes)
            rep = _report_from_cm(cm, class_names)
            present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
            f1 = np.array([rep["classes"][str(c)]["f1"] for c in class_names])
            row["accuracy"] = rep["accuracy"]
            row["confusion"] = cm.astype(int).tolist()
            row["macro_f1"] = float(f1[present].mean())
            if lut is not None:
                row["two_class_accuracy"] = float(np.mean(lut[tb] == lut[pb]))
            for c in class_names:
                m = rep["classes"][str(c)]
                row["support"][str(c)] = m["support"]
                row["per_class_recall"][str(c)] = m["recall"] if m["support"] else None
        rows.append(row)
    return rows


def expected_calibration_error(y_true: Any, probs: Any, n_bins: int = 10) -> float:
    """Expected calibration error of the top-1 confidence.

    Each example's confidence is its largest probability and its prediction the
    argmax. Confidences are grouped in ``n_bins`` equal-width bins ``(k/B, (k+1)/B]``
    (a confidence of exactly 0 goes in the first bin) and

        ECE = sum_b (n_b / N) * |accuracy_b - mean_confidence_b|.

    0 means perfectly calibrated; a model that says 0.99 and is right half the time
    scores 0.49.

    Args:
        y_true: (N,) true class indices.
        probs: (N, C) predicted probabilities (rows should sum to 1).
        n_bins: number of confidence bins.

    Returns:
        The ECE as a float in [0, 1]; 0.0 when N = 0.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    pr = np.asarray(probs, np.float64)
    t = _labels(y_true, "y_true")
    if len(t) == 0:
        if pr.size:
            raise ValueError(f"y_true is empty but probs has shape {pr.shape}")
        return 0.0
    if pr.ndim != 2 or len(pr) != len(t):
        raise ValueError(f"probs must be (N, C) with N={len(t)}, got shape {pr.shape}")
    if not np.all(np.isfinite(pr)):
        raise ValueError("probs contains NaN or inf")
    conf = pr.max(axis=1)
    correct = (pr.argmax(axis=1) == t).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges[1:-1], conf, side="left"), 0, n_bins - 1)
    sum_conf = np.bincount(idx, weights=conf, minlength=n_bins)
    sum_acc = np.bincount(idx, weights=correct, minlength=n_bins)
    gap = np.abs(sum_acc - sum_conf)  # = n_b * |acc_b - conf_b|
    return float(gap.sum() / len(t))
