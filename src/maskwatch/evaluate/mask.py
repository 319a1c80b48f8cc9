"""``maskwatch evaluate`` (mask part): run a classifier on datasets and report.

The crops are cut exactly as in training and at run time; the split is recomputed
with the same grouping and seed as ``maskwatch train``, so ``--split test`` gives the
held-out faces of a training run on the same sources.

To choose the quality rule's thresholds (faces shown as ``unknown``, "cannot judge"),
the report also gives accuracy by the face's mean luma and sharpness
(:func:`~maskwatch.ops.quality.face_quality` on the same crops), and with a rule the
figures on the faces it judges and the share it does not.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.evaluate.metrics import classification_report, mask_vs_no_mask, results_by_size
from maskwatch.evaluate.report import (
    QUALITY_BINS,
    json_safe,
    pct,
    rule_text,
    safe_name,
    write_report,
)
from maskwatch.types import MASK_CLASSES

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "all")


def _headline(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    rep = classification_report(y_true, y_pred, list(MASK_CLASSES))
    two = mask_vs_no_mask(y_true, y_pred, list(MASK_CLASSES))
    return {
        "n": int(len(y_true)),
        "accuracy": rep["accuracy"],
        "two_class_accuracy": two["accuracy"],
        "macro_f1": rep["macro_avg"]["f1"],
        "recall": {c: rep["classes"][c]["recall"] for c in MASK_CLASSES},
        "support": {c: rep["classes"][c]["support"] for c in MASK_CLASSES},
    }


def evaluate_faceset(
    clf: Any,
    fs: Any,
    out_dir: str | Path,
    *,
    history: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    min_size: float = 32.0,
    rule: Any = None,
) -> dict[str, Any]:
    """Classify every crop of a :class:`~maskwatch.train.data.FaceSet` and write reports.

    Writes the overall report into ``out_dir`` and one per source into
    ``out_dir/by_source/<source>/``. Each source also gets the figures for faces
    whose shorter side is at least ``min_size`` px (key ``min_size_32``).

    Args:
        rule: a :class:`~maskwatch.ops.quality.QualityRule`: adds the figures on the
            faces it judges (key ``judged``, per source too) and the share it does not
            (``unknown_share``). None: no rule figures.

    Returns:
        The overall metrics dict, with ``by_source`` headlines added, and the accuracy
        by face quality: ``by_luma`` and ``by_sharpness`` (rows as ``by_size``, bins
        :data:`~maskwatch.evaluate.report.QUALITY_BINS`).
    """
    from maskwatch.ops.quality import face_quality

    out = Path(out_dir)
    probs = clf.predict_crops(fs.crops) if len(fs) else np.zeros((0, len(MASK_CLASSES)), np.float32)
    # The model's class order may differ from MASK_CLASSES; map onto it.
    order = [clf.class_names.index(c) for c in MASK_CLASSES]
    probs = probs[:, order] if len(probs) else probs
    y_pred = probs.argmax(1) if len(probs) else np.zeros(0, np.int64)
    y_true = fs.labels
    info = {**(extra or {}), "model": str(getattr(clf, "model_path", "")), "data": fs.summary()}
    metrics = write_report(
        out, y_true, y_pred, probs, list(MASK_CLASSES), sizes=fs.sizes, history=history, extra=info,
        title="Mask classifier: all sources",
    )
    by_source: dict[str, Any] = {}
    for src in sorted(set(fs.sources.tolist())):
        sel = fs.sources == src
        sub = write_report(
            out / "by_source" / safe_name(src), y_true[sel], y_pred[sel], probs[sel],
            list(MASK_CLASSES), sizes=fs.sizes[sel], extra={"source": src},
            title=f"Mask classifier: {src}",
        )
        head = _headline(y_true[sel], y_pred[sel])
        big = sel & (fs.sizes >= min_size)
        head["min_size_32"] = _headline(y_true[big], y_pred[big])
        head["by_size"] = sub.get("by_size")
        by_source[src] = head
    metrics["by_source"] = by_source
    metrics.update({k: v for k, v in _headline(y_true, y_pred).items() if k not in metrics})
    info_of = getattr(clf, "info", None)
    quality = face_quality(fs.crops, fs.sizes, info_of.margin if info_of else 0.15)
    for measure in ("luma", "sharpness"):
        metrics[f"by_{measure}"] = results_by_size(
            y_true, y_pred, getattr(quality, measure), list(MASK_CLASSES),
            bins=QUALITY_BINS[measure])
    if rule is not None:
        judged = rule.judge(quality)
        metrics["quality_rule"] = asdict(rule)
        metrics["unknown_n"] = int((~judged).sum())
        metrics["unknown_share"] = float((~judged).mean()) if len(judged) else None
        metrics["judged"] = _headline(y_true[judged], y_pred[judged])
        for src, head in by_source.items():
            sel = fs.sources == src
            head["unknown_share"] = float((~judged[sel]).mean()) if sel.any() else None
            head["judged"] = _headline(y_true[sel & judged], y_pred[sel & judged])
    (out / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2))
    _append_source_table(out / "report.md", by_source)
    _append_quality_tables(out / "report.md", metrics)
    return metrics


def _append_quality_tables(report_md: Path, metrics: dict[str, Any]) -> None:
    """The accuracy by face quality and, with a rule, on the judged faces."""
    lines = []
    for measure, title in (("luma", "mean luma of the face (0-255)"),
                           ("sharpness", "sharpness (Laplacian variance, 64 px grey face)")):
        lines += ["", f"## By {title}", "", "| bin | faces | 3-class acc | 2-class acc |",
                  "|---|---|---|---|"]
        lines += [f"| {r['bin']} | {r['n']} | {pct(r['accuracy'], 2)} | "
                  f"{pct(r['two_class_accuracy'], 2)} |" for r in metrics[f"by_{measure}"]]
    if "judged" in metrics:
        rule, j = metrics["quality_rule"], metrics["judged"]
        lines += ["", "## Quality rule", "",
                  f"Rule: {rule_text(rule)}. {metrics['unknown_n']} faces "
                  f"({pct(metrics['unknown_share'], 2)}) cannot be judged; on the {j['n']} "
                  f"judged: 3-class accuracy {pct(j['accuracy'], 2)}, 2-class "
                  f"{pct(j['two_class_accuracy'], 2)}, macro-F1 {j['macro_f1']:.3f}.", "",
                  "| source | unknown | judged faces | 3-class acc | 2-class acc | macro-F1 |",
                  "|---|---|---|---|---|---|"]
        for src, h in metrics["by_source"].items():
            hj = h["judged"]
            f1 = f"{hj['macro_f1']:.3f}" if hj["macro_f1"] is not None else "n/a"
            lines.append(f"| {src} | {pct(h['unknown_share'], 2)} | {hj['n']} | "
                         f"{pct(hj['accuracy'], 2)} | {pct(hj['two_class_accuracy'], 2)} | "
                         f"{f1} |")
    with report_md.open("a") as f:
        f.write("\n".join(lines) + "\n")


def _append_source_table(report_md: Path, by_source: dict[str, Any]) -> None:
    lines = [
        "",
        "## By source",
        "",
        "| source | faces | 3-class acc | 2-class acc | macro-F1 | mask_incorrect recall | "
        "faces >= 32 px | 2-class acc >= 32 | macro-F1 >= 32 | mask_incorrect recall >= 32 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for src, h in by_source.items():
        b = h["min_size_32"]
        h_incorrect = (pct(h["recall"]["mask_incorrect"], 2) if h["support"]["mask_incorrect"]
                       else "n/a")
        b_incorrect = (pct(b["recall"]["mask_incorrect"], 2) if b["support"]["mask_incorrect"]
                       else "n/a")
        lines.append(
            f"| {src} | {h['n']} | {pct(h['accuracy'], 2)} | {pct(h['two_class_accuracy'], 2)} | "
            f"{h['macro_f1']:.3f} | {h_incorrect} | {b['n']} | "
            f"{pct(b['two_class_accuracy'], 2)} | {b['macro_f1']:.3f} | {b_incorrect} |"
        )
    with report_md.open("a") as f:
        f.write("\n".join(lines) + "\n")


def evaluate_dataset(
    model_path: str | Path | None,
    sources: list[Any],
    out_dir: str | Path,
    *,
    split: str = "test",
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    templates_dir: Path | None = None,
    progress: bool = True,
    max_per_source: int = 0,
    rule: Any = None,
) -> dict[str, Any]:
    """Evaluate a model file on data sources; see the module docstring.

    Args:
        model_path: ONNX file (None: the shipped model).
        sources: :class:`~maskwatch.train.data.SourceSpec` list.
        split: ``test`` (held-out, as in training with the same seed), ``val``,
            ``train`` or ``all``.
        rule: a :class:`~maskwatch.ops.quality.QualityRule` whose judged-face figures
            are added (see :func:`evaluate_faceset`); None: none.
    """
    from maskwatch.models.detector import YuNetDetector
    from maskwatch.models.mask_classifier import MaskClassifier
    from maskwatch.train.data import CropMaker, assign_splits, load_sources

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    clf = MaskClassifier(model_path)
    maker = CropMaker(YuNetDetector(score_threshold=0.5, max_side=1024), clf.info.input_size,
                      clf.info.margin)
    fs = load_sources(
        sources, maker, templates_dir=templates_dir, seed=seed, progress=progress,
        max_per_source=max_per_source
    )
    fs = assign_splits(fs, fractions=fractions, seed=seed)
    if split != "all":
        fs = fs.subset(fs.splits == split)
    return evaluate_faceset(clf, fs, out_dir, extra={"split": split, "seed": seed}, rule=rule)
