"""Write an evaluation report (JSON, text, PNG plots, Markdown) for the mask classifier.

matplotlib is only needed here and is imported inside :func:`write_report`; figures
are drawn on the non-interactive Agg canvas (no ``pyplot``, so a caller's backend is
not changed), and importing this module never pulls matplotlib in.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.evaluate.metrics import (
    TWO_CLASS_MAP,
    classification_report,
    confusion_matrix,
    expected_calibration_error,
    format_classification_report,
    mask_vs_no_mask,
    results_by_size,
    size_bin_label,
    two_class_labels,
)

log = logging.getLogger(__name__)

ECE_BINS = 10

#: Bins of the face quality measures (:func:`~maskwatch.ops.quality.face_quality`) in
#: the reports that choose the quality rule's thresholds: ``(low, high)`` pairs as in
#: :data:`~maskwatch.evaluate.metrics.SIZE_BINS`. On the shared clip the classifier's
#: false mask labels were at luma 9-13 and sharpness 2-4, its right ones at a median of
#: 35 and 60: the low bins are narrow.
QUALITY_BINS: dict[str, tuple[tuple[float, float | None], ...]] = {
    "luma": ((0, 10), (10, 15), (15, 20), (20, 30), (30, 50), (50, None)),
    "sharpness": ((0, 3), (3, 5), (5, 10), (10, 20), (20, 50), (50, 100), (100, None)),
    "size": ((0, 16), (16, 24), (24, 32), (32, 48), (48, 64), (64, None)),
}

FILES = {
    "metrics": "metrics.json",
    "text": "classification_report.txt",
    "confusion": "confusion_matrix.png",
    "curves": "curves.png",
    "markdown": "report.md",
}


def _new_figure() -> Any:
    """A factory for figures drawn on the "Agg" canvas, or an ImportError saying what to install.

    Figures are made with ``matplotlib.figure.Figure`` and an explicit ``FigureCanvasAgg``
    rather than through ``pyplot``, so the caller's global backend and figure list are
    left alone (safe in notebooks, threads and headless servers).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            "maskwatch.evaluate.report needs matplotlib; install the [train] extra: "
            "pip install 'maskwatch[train]'"
        ) from exc

    def new_figure(figsize: tuple[float, float]) -> Any:
        fig = Figure(figsize=figsize)
        FigureCanvasAgg(fig)
        return fig

    return new_figure


def safe_name(name: str) -> str:
    """A source name made safe as a folder name (``voc:mask-scenes`` -> ``voc_mask-scenes``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "source"


def pct(v: float | None, digits: int = 1) -> str:
    """A fraction as a percentage string, ``n/a`` for None."""
    return "n/a" if v is None else f"{100 * v:.{digits}f}%"


def rule_text(rule: Mapping[str, Any] | None) -> str:
    """A quality rule's thresholds in words (``QualityRule`` as a dict; 0 = that check off):
    ``"luma >= 8"``, ``"off"`` when every check is off, ``"none"`` without a rule."""
    if not rule:
        return "none"
    on = [f"{name} >= {rule[key]:g}" for key, name in (
        ("min_luma", "luma"), ("min_sharpness", "sharpness"), ("min_size", "size"))
        if rule.get(key)]
    return ", ".join(on) if on else "off"


def json_safe(obj: Any) -> Any:
    """Convert numpy values, tuples, paths and non-finite floats to JSON-ready values."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (list, tuple, set)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    return str(obj)


def quality_bin_rows(values: Any, bins: Sequence[tuple[float, float | None]],
                     **flags: Any) -> list[dict[str, Any]]:
    """Counts of flagged items per bin of a quality measure.

    Args:
        values: (N,) the measure (luma, sharpness or size) of each item.
        bins: ``(low, high)`` pairs, ``high=None`` for an open upper end (see
            :data:`QUALITY_BINS`).
        flags: named (N,) bool arrays (None: left out), e.g. ``says_mask=...``.

    Returns:
        One dict per bin: ``{"bin": "10-15", "low", "high", "n", NAME: count,
        NAME + "_share": count / n or None}`` for every flag given.
    """
    v = np.asarray(values, np.float64).reshape(-1)
    given = {k: np.asarray(f, bool).reshape(-1) for k, f in flags.items() if f is not None}
    for k, f in given.items():
        if len(f) != len(v):
            raise ValueError(f"{k} has {len(f)} values but there are {len(v)} items")
    rows = []
    for low, high in bins:
        sel = (v >= low) & (v < high if high is not None else True)
        n = int(sel.sum())
        row: dict[str, Any] = {"bin": size_bin_label(low, high), "low": low, "high": high, "n": n}
        for k, f in given.items():
            row[k] = int(f[sel].sum())
            row[k + "_share"] = row[k] / n if n else None
        rows.append(row)
    return rows


def _confusion_by_size(by_size: list[dict[str, Any]], class_names: Sequence[str]) -> list[str]:
    """The confusion matrix of every face-size bin as one table (rows: bin and true class)."""
    if not any(b.get("confusion") for b in by_size):
        return []
    lines = ["### Confusion matrix by face size", "",
             "Rows are a size bin and a true class, columns the predicted class (counts).", ""]
    rows = []
    for b in by_size:
        if not b.get("confusion"):
            continue
        for i, name in enumerate(class_names):
            if sum(b["confusion"][i]):
                rows.append([b["bin"], f"**{name}**", *b["confusion"][i]])
    return lines + _md_table(["size (px)", "true \\ predicted", *class_names], rows) + [""]


def _row_normalised(cm: np.ndarray) -> np.ndarray:
    """Rows of ``cm`` divided by their sums (0 for empty rows)."""
    sums = cm.sum(axis=1, keepdims=True).astype(np.float64)
    out = np.zeros(cm.shape, np.float64)
    np.divide(cm, sums, out=out, where=sums != 0)
    return out


def _fmt(v: Any, digits: int = 3) -> str:
    """Number for a Markdown cell; "–" for None."""
    if v is None:
        return "–"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    return f"{float(v):.{digits}f}"


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(
    header: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None
) -> list[str]:
    """Markdown table lines; ``align`` is one letter per column, "l" or "r"."""
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines


def _series(history: Mapping[str, Any], key: str) -> np.ndarray | None:
    values = history.get(key)
    if values is None:
        return None
    arr = np.array(
        [np.nan if v is None else float(v) for v in np.asarray(values, dtype=object).reshape(-1)]
    )
    return arr if arr.size else None


def _epochs_axis(history: Mapping[str, Any], length: int) -> np.ndarray:
    """x values of a per-epoch series: ``history["epoch"]`` when it fits, else 1..length."""
    ep = history.get("epoch")
    if ep is not None and len(ep) >= length:
        return np.asarray(ep, np.float64)[:length]
    return np.arange(1, length + 1, dtype=np.float64)


def _best_index(history: Mapping[str, Any]) -> int | None:
    best = history.get("best_epoch")
    if best is None:
        return None
    try:
        return int(best)
    except (TypeError, ValueError):
        log.warning("ignoring non-integer best_epoch %r", best)
        return None


def _plot_confusion(
    new_figure: Any, cm: np.ndarray, class_names: Sequence[str], path: Path, title: str
) -> None:
    """Two heatmaps side by side: raw counts and row-normalised percentages."""
    c = len(class_names)
    norm = _row_normalised(cm)
    support = cm.sum(axis=1)
    cell = max(1.0, 1.3 - 0.03 * c)
    side = c * cell + 2.4
    fig = new_figure((2 * side + 0.5, side * 0.85 + 1.0))
    axes = fig.subplots(1, 2)
    ylabels = [f"{name}\n(n={int(s)})" for name, s in zip(class_names, support, strict=True)]
    panels = (
        (
            axes[0],
            cm.astype(np.float64),
            "Counts",
            max(float(cm.max()) if cm.size else 0.0, 1.0),
            True,
        ),
        (axes[1], norm * 100.0, "Row-normalised (% of true class)", 100.0, False),
    )
    for ax, values, name, vmax, is_count in panels:
        ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax)
        ax.set_title(name, fontsize=12)
        ax.set_xticks(range(c))
        ax.set_yticks(range(c))
        ax.set_xticklabels(class_names, rotation=25, ha="right", fontsize=10)
        ax.set_yticklabels(ylabels, fontsize=10)
        ax.set_xlabel("Predicted", fontsize=11)
        ax.set_ylabel("True", fontsize=11)
        for i in range(c):
            for j in range(c):
                if is_count:
                    text = str(int(cm[i, j]))
                else:
                    text = f"{values[i, j]:.1f}%" if support[i] else "–"
                colour = "white" if values[i, j] > 0.55 * vmax else "black"
                ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=12)
    fig.suptitle(f"{title}: confusion matrix (N={int(cm.sum())})", fontsize=13)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _plot_curves(new_figure: Any, history: Mapping[str, Any], path: Path, title: str) -> None:
    """Loss and accuracy per epoch, train vs val, with the best epoch marked."""
    from matplotlib.ticker import MaxNLocator

    fig = new_figure((12, 4.5))
    axes = fig.subplots(1, 2)
    best = _best_index(history)
    panels = ((axes[0], "loss", "Loss"), (axes[1], "acc", "Accuracy"))
    for ax, key, name in panels:
        plotted = False
        for split, style in (("train", "-"), ("val", "--")):
            y = _series(history, f"{split}_{key}")
            if y is None:
                continue
            x = _epochs_axis(history, len(y))
            marker = "o" if len(y) <= 30 else None
            ax.plot(x, y, style, marker=marker, markersize=4, label=split)
            plotted = True
            if best is not None and 0 <= best < len(y) and np.isfinite(y[best]):
                ax.plot([x[best]], [y[best]], marker="*", markersize=13, color="crimson", zorder=5)
        if best is not None and plotted:
            lengths = [
                len(s)
                for s in (_series(history, f"{p}_{key}") for p in ("train", "val"))
                if s is not None
            ]
            if 0 <= best < max(lengths):
                xb = _epochs_axis(history, max(lengths))[best]
                ax.axvline(
                    xb, color="crimson", linestyle=":", linewidth=1.5, label=f"best epoch ({xb:g})"
                )
        if not plotted:
            ax.text(
                0.5,
                0.5,
                f"no {name.lower()} recorded",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
        ax.set_title(name, fontsize=12)
        ax.set_xlabel("Epoch", fontsize=11)
        ax.set_ylabel(name, fontsize=11)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if plotted:
            ax.legend(fontsize=10)
    fig.suptitle(f"{title}: training curves", fontsize=13)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _markdown(
    metrics: dict[str, Any], class_names: Sequence[str], cm: np.ndarray, files: Sequence[str]
) -> str:
    rep = metrics["classification_report"]
    two = metrics.get("two_class")
    lines = [f"# {metrics['title']}", ""]
    lines.append(f"- Faces evaluated: **{metrics['n']}**")
    lines.append(f"- Accuracy ({len(class_names)} classes): **{_fmt(rep['accuracy'])}**")
    lines.append(f"- Macro F1: **{_fmt(rep['macro_avg']['f1'])}**")
    if two is not None:
        lines.append(f"- Mask / no-mask accuracy: **{_fmt(two['accuracy'])}**")
    if metrics.get("ece") is not None:
        lines.append(
            f"- Expected calibration error (top-1, {metrics['ece_bins']} bins): "
            f"**{_fmt(metrics['ece'])}**"
        )
    lines.append("")

    lines += ["## Per-class results", ""]
    header = ["class", "precision", "recall", "F1", "support"]
    rows = [
        [name, _fmt(m["precision"]), _fmt(m["recall"]), _fmt(m["f1"]), m["support"]]
        for name, m in rep["classes"].items()
    ]
    for label, key in (("macro avg", "macro_avg"), ("weighted avg", "weighted_avg")):
        m = rep[key]
        rows.append(
            [f"*{label}*", _fmt(m["precision"]), _fmt(m["recall"]), _fmt(m["f1"]), m["support"]]
        )
    lines += _md_table(header, rows) + [""]

    if two is not None:
        masked = [c for c, v in TWO_CLASS_MAP.items() if v == "mask" and c in class_names]
        lines += ["## Mask vs no mask", ""]
        lines.append(
            f"Binary view for comparison with mask/no-mask classifiers: **mask** = "
            f"{' or '.join(f'`{c}`' for c in masked)} (a mask is worn), "
            f"**no_mask** = `without_mask`. "
            f"Accuracy **{_fmt(two['accuracy'])}** on {two['n']} faces."
        )
        lines.append("")
        rows = [
            [name, _fmt(m["precision"]), _fmt(m["recall"]), _fmt(m["f1"]), m["support"]]
            for name, m in two["classes"].items()
        ]
        lines += _md_table(header, rows) + [""]
        labels = two["labels"]
        rows = [[f"**{t}**", *two["confusion"][i]] for i, t in enumerate(labels)]
        lines += _md_table(["true \\ predicted", *labels], rows) + [""]

    if "by_size" in metrics:
        lines += ["## By face size", ""]
        lines.append(
            "Face size = shorter side of the face box in pixels; bins are `low <= size < high`."
        )
        lines.append("")
        header = ["size (px)", "n", "accuracy", "mask/no-mask acc.", "macro F1"]
        header += [f"recall {c}" for c in class_names]
        rows = []
        for b in metrics["by_size"]:
            row = [
                b["bin"],
                b["n"],
                _fmt(b["accuracy"]),
                _fmt(b["two_class_accuracy"]),
                _fmt(b["macro_f1"]),
            ]
            row += [_fmt(b["per_class_recall"].get(str(c))) for c in class_names]
            rows.append(row)
        lines += _md_table(header, rows) + [""]
        lines += _confusion_by_size(metrics["by_size"], class_names)

    lines += ["## Confusion matrix", ""]
    lines.append(
        "Rows are true classes, columns predicted; cells give count (% of the true class)."
    )
    lines.append("")
    norm = _row_normalised(cm)
    rows = []
    for i, name in enumerate(class_names):
        total = int(cm[i].sum())
        cells = [
            f"{int(cm[i, j])} ({norm[i, j] * 100:.1f}%)" if total else "0"
            for j in range(len(class_names))
        ]
        rows.append([f"**{name}**", *cells, total])
    lines += _md_table(["true \\ predicted", *class_names, "total"], rows) + [""]
    lines += [f"![Confusion matrix]({FILES['confusion']})", ""]

    if FILES["curves"] in files:
        lines += ["## Training curves", ""]
        hist = metrics.get("history") or {}
        best = _best_index(hist)
        n_epochs = max((len(v) for v in hist.values() if isinstance(v, list)), default=0)
        lines.append(f"Epochs recorded: {n_epochs}.")
        if best is not None:
            parts = [f"Best epoch: **{best + 1}** (index {best})"]
            for key in ("val_loss", "val_acc"):
                seq = hist.get(key)
                if isinstance(seq, list) and 0 <= best < len(seq):
                    parts.append(f"{key} {_fmt(seq[best])}")
            lines.append(", ".join(parts) + ".")
        lines += ["", f"![Training curves]({FILES['curves']})", ""]

    info = metrics.get("info") or {}
    if info:
        lines += ["## Info", ""]
        rows = [[k, json.dumps(v) if not isinstance(v, str) else v] for k, v in info.items()]
        lines += _md_table(["key", "value"], rows, align="ll") + [""]

    lines += ["## Files", ""]
    lines += [f"- [{name}]({name})" for name in files if name != FILES["markdown"]]
    return "\n".join(lines) + "\n"


def write_report(
    out_dir: str | Path,
    y_true: Any,
    y_pred: Any,
    probs: Any,
    class_names: Sequence[str],
    *,
    sizes: Any = None,
    history: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    title: str = "Mask classifier evaluation",
) -> dict[str, Any]:
    """Compute the evaluation metrics and write them as files in ``out_dir``.

    Files written (``out_dir`` is created if needed):

    - ``metrics.json``: everything in the returned dict.
    - ``classification_report.txt``: aligned text tables (3-class and mask/no-mask).
    - ``confusion_matrix.png``: counts and row-normalised percentages.
    - ``curves.png``: only when ``history`` is given; loss and accuracy per epoch,
      train vs val, best epoch marked.
    - ``report.md``: Markdown summary linking the PNGs.

    Args:
        out_dir: output folder.
        y_true: (N,) true class indices into ``class_names``.
        y_pred: (N,) predicted class indices.
        probs: (N, C) predicted probabilities, used for the calibration error; may be
            ``None`` (ECE is then ``None``).
        class_names: the C class names in label order (e.g. ``MASK_CLASSES``).
        sizes: optional (N,) face sizes in px (shorter box side) for the by-size table.
        history: optional per-epoch training history ``{"train_loss": [...],
            "val_loss": [...], "train_acc": [...], "val_acc": [...]}``; optional
            ``"epoch"`` (x values, default 1..E) and ``"best_epoch"``, a 0-based index
            into those lists.
        extra: optional run information (model, dataset, checkpoint, ...) stored
            under ``"info"``; values are made JSON-safe.
        title: title of the plots and of the Markdown report.

    Returns:
        The metrics dict also written to ``metrics.json``: ``title``, ``n``,
        ``class_names``, ``accuracy``, ``macro_f1``, ``classification_report`` (see
        :func:`~maskwatch.evaluate.metrics.classification_report`),
        ``confusion_matrix`` (C x C nested lists, rows = true),
        ``confusion_matrix_normalized`` (row-normalised), ``two_class`` (see
        :func:`~maskwatch.evaluate.metrics.mask_vs_no_mask`; ``None`` when the class
        names have no mask/no-mask meaning), ``by_size`` (only when ``sizes`` is
        given), ``ece`` and ``ece_bins``, ``info`` (``title``, ``class_names`` and
        ``extra`` merged in), ``history`` (only when given) and ``files`` (names
        written).

    Raises:
        ImportError: matplotlib is missing (install ``maskwatch[train]``).
        ValueError: inconsistent lengths or out-of-range labels.
    """
    new_figure = _new_figure()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    class_names = [str(c) for c in class_names]

    cm = confusion_matrix(y_true, y_pred, len(class_names))
    rep = classification_report(y_true, y_pred, class_names)
    try:
        two_class_labels(class_names)
        two: dict[str, Any] | None = mask_vs_no_mask(y_true, y_pred, class_names)
    except ValueError:
        log.info(
            "class names %s have no mask/no-mask mapping; skipping the two-class view", class_names
        )
        two = None
    ece = None if probs is None else expected_calibration_error(y_true, probs, n_bins=ECE_BINS)

    files = [FILES["metrics"], FILES["text"], FILES["confusion"]]
    if history is not None:
        files.append(FILES["curves"])
    files.append(FILES["markdown"])

    metrics: dict[str, Any] = {
        "title": title,
        "n": rep["n"],
        "class_names": class_names,
        "accuracy": rep["accuracy"],
        "macro_f1": rep["macro_avg"]["f1"],
        "classification_report": rep,
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_normalized": _row_normalised(cm).tolist(),
        "two_class": two,
    }
    if sizes is not None:
        metrics["by_size"] = results_by_size(y_true, y_pred, sizes, class_names)
    metrics["ece"] = ece
    metrics["ece_bins"] = ECE_BINS
    metrics["info"] = {"title": title, "class_names": class_names, **dict(extra or {})}
    if history is not None:
        metrics["history"] = dict(history)
    metrics["files"] = files
    metrics = json_safe(metrics)

    with open(out / FILES["metrics"], "w", encoding="utf-8") as fh:
        json.dump(metrics, fh, indent=2, allow_nan=False)
        fh.write("\n")

    text = [title, "=" * len(title), "", format_classification_report(rep)]
    if two is not None:
        text += ["Mask vs no mask (mask = with_mask or mask_incorrect; no_mask = without_mask)", ""]
        text.append(format_classification_report(two))
    if ece is not None:
        text.append(f"Expected calibration error (top-1, {ECE_BINS} bins): {ece:.4f}\n")
    (out / FILES["text"]).write_text("\n".join(text), encoding="utf-8")

    _plot_confusion(new_figure, cm, class_names, out / FILES["confusion"], title)
    if history is not None:
        _plot_curves(new_figure, history, out / FILES["curves"], title)

    (out / FILES["markdown"]).write_text(
        _markdown(metrics, class_names, cm, files), encoding="utf-8"
    )
    log.info("wrote evaluation report to %s", out)
    return metrics
