"""``maskwatch evaluate --task tracking``: do smoothed mask labels follow the classifier?

The live engine classifies a tracked face when its track appears, while it is
unsettled, and every ``classify_every`` frames after, and shows a smoothed, stable
label in between. This evaluation runs the engine on a video and, on every frame,
also runs the classifier on every face (no tracking, no smoothing), then reports:

- agreement: the fraction of face-frames whose shown label equals the per-frame
  classifier's argmax, overall and on the frames where the per-frame classifier is
  confident (top probability >= ``confident``);
- flickers: single-frame label changes inside a track (a label that differs from the
  frames before and after it), for the shown labels and for the per-frame ones;
- classifier calls: how many face-frames the engine classified, against all of them.

No ground truth is needed; agreement measures what smoothing hides or delays, and the
per-frame flicker count measures how much the classifier disagrees with itself.

With a quality rule (``PipelineConfig.quality``; the engine's default unless
given), some faces are shown as ``unknown`` ("cannot judge"). The report counts the
labels shown, ``unknown`` included, and its share of face-frames; agreement is over the
judged face-frames. With ``truth`` (the one class every face of the video has, e.g.
``without_mask`` on the shared clip, where nobody wears a mask) it reports the share of
judged shown labels that are wrong and how many say a mask. To choose the thresholds it
also gives the per-frame classifier's figures by mean luma, sharpness and size of the
face (:func:`~maskwatch.ops.quality.face_quality`): how many face-frames, how many of
them it says wear a mask, and with ``truth`` how many it gets wrong.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.evaluate.report import (
    QUALITY_BINS,
    json_safe,
    pct,
    quality_bin_rows,
    rule_text,
)
from maskwatch.types import MASK_CLASSES, SHOWN_MASK_STATES, UNKNOWN_MASK

log = logging.getLogger(__name__)


def single_frame_flickers(labels: list[str]) -> int:
    """Labels that differ from both neighbours, which agree with each other.

    Example:
        >>> single_frame_flickers(["a", "b", "a", "a", "c", "c", "a"])
        1
    """
    return sum(1 for i in range(1, len(labels) - 1)
               if labels[i] != labels[i - 1] and labels[i - 1] == labels[i + 1])


#: Mask states that say a mask is worn (properly or below the nose).
SAYS_MASK = ("with_mask", "mask_incorrect")


def evaluate_tracking(video: str | Path, out: str | Path | None = None, *, confident: float = 0.8,
                      truth: str | None = None, progress: bool = True,
                      **config: Any) -> dict[str, Any]:
    """Run the live engine on a video and compare its labels with per-frame ones.

    Args:
        video: a video file (anything :func:`maskwatch.sources.open_source` reads).
        out: folder for ``tracking.json`` and ``tracking.md`` (None: no files).
        confident: per-frame top probability, 0-1, above which a frame counts as one
            where the classifier is sure.
        truth: the mask state of every face in the video (one of ``MASK_CLASSES``), when
            known: adds the wrong shares (see the module docstring). None: unknown.
        progress: show a progress bar.
        config: :class:`~maskwatch.pipeline.PipelineConfig` overrides (``quality``: the
            quality rule).

    Returns:
        The figures as a JSON-ready dict.
    """
    from tqdm import tqdm

    from maskwatch.ops.quality import face_quality
    from maskwatch.pipeline import Pipeline, PipelineConfig
    from maskwatch.sources import Frame, open_source

    if truth is not None and truth not in MASK_CLASSES:
        raise ValueError(f"truth must be one of {', '.join(MASK_CLASSES)}, got {truth!r}")
    engine = Pipeline(PipelineConfig(**config))
    clf = engine.classifier
    order = [clf.class_names.index(c) for c in MASK_CLASSES]
    shown: dict[int, list[str]] = defaultdict(list)
    per_frame: dict[int, list[str]] = defaultdict(list)
    ended: list[Any] = []
    n = agree = n_conf = agree_conf = frames = 0
    confusion = {a: dict.fromkeys(SHOWN_MASK_STATES, 0) for a in MASK_CLASSES}
    # per labelled face-frame: per-frame class, shown state, luma, sharpness, size
    rows: list[tuple[str, str, float, float, float]] = []
    contested = 0  # face-frames shown as unknown because their track is contested
    with open_source(str(video)) as src:
        bar = tqdm(total=src.frame_count, desc="tracking", unit="frame", disable=not progress)
        for item in src:
            bar.update(1)
            if not isinstance(item, Frame):
                continue
            frames += 1
            result = engine.process(item.image, item.index, item.timestamp)
            ended += result.ended
            if len(result.faces) == 0:
                continue
            crops = clf.crops(item.image, result.faces)
            probs = clf.predict_crops(crops)[:, order]
            quality = face_quality(crops, result.faces.sizes, clf.info.margin)
            for tid, label, p, luma, sharp, size in zip(
                    result.faces.track_ids.tolist(), result.faces.mask_labels, probs,
                    *quality, strict=True):
                if label is None:
                    continue
                alone = MASK_CLASSES[int(p.argmax())]
                shown[tid].append(label)
                per_frame[tid].append(alone)
                confusion[alone][label] += 1
                rows.append((alone, label, float(luma), float(sharp), float(size)))
                n += 1
                if label == UNKNOWN_MASK:  # agreement is over the judged face-frames
                    track = engine.tracker.live.get(tid)
                    contested += bool(track is not None and track.judged and track.contested)
                    continue
                agree += alone == label
                if p.max() >= confident:
                    n_conf += 1
                    agree_conf += alone == label
        bar.close()
    ended += engine.finish()
    classified = sum(t.classifications for t in ended)
    counts = {b: sum(confusion[a][b] for a in MASK_CLASSES) for b in SHOWN_MASK_STATES}
    judged = n - counts[UNKNOWN_MASK]
    res = {
        "video": str(video),
        "frames": frames,
        "face_frames": n,
        "tracks": len(shown),
        "judged_face_frames": judged,
        "agreement": agree / judged if judged else None,
        "confident": confident,
        "confident_face_frames": n_conf,
        "agreement_confident": agree_conf / n_conf if n_conf else None,
        "flickers_shown": sum(single_frame_flickers(v) for v in shown.values()),
        "flickers_per_frame": sum(single_frame_flickers(v) for v in per_frame.values()),
        "classifier_calls": classified,
        "confusion_per_frame_vs_shown": confusion,
        "disagreeing_tracks": sorted(
            ({"track": t, "face_frames": len(v),
              "unknown": sum(a == UNKNOWN_MASK for a in v),
              "disagree": sum(a != b for a, b in zip(v, per_frame[t], strict=True)
                              if a != UNKNOWN_MASK)}
             for t, v in shown.items()), key=lambda r: -r["disagree"])[:10],
        "config": json_safe(asdict(engine.config)),
        **shown_figures(rows, counts, truth),
        "unknown_contested": contested,
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "tracking.json").write_text(json.dumps(json_safe(res), indent=2) + "\n")
        (out / "tracking.md").write_text(format_tracking(res))
    return res


def shown_figures(rows: list[tuple[str, str, float, float, float]], counts: dict[str, int],
                  truth: str | None) -> dict[str, Any]:
    """The figures of the shown states and of the per-frame classifier by face quality.

    Args:
        rows: per labelled face-frame ``(per-frame class, shown state, luma, sharpness,
            size)``.
        counts: face-frames shown in each of ``SHOWN_MASK_STATES``.
        truth: the class of every face, or None.
    """
    n = len(rows)
    judged = n - counts[UNKNOWN_MASK]
    says_mask = sum(counts[k] for k in SAYS_MASK)
    out: dict[str, Any] = {
        "shown": counts,
        "unknown_face_frames": counts[UNKNOWN_MASK],
        "unknown_share": counts[UNKNOWN_MASK] / n if n else None,
        "shown_says_mask": says_mask,
        "shown_says_mask_share": says_mask / judged if judged else None,
        "truth": truth,
    }
    if truth is not None:
        wrong = judged - counts[truth]
        out["shown_wrong"] = wrong
        out["shown_wrong_share"] = wrong / judged if judged else None
    alone = np.array([r[0] for r in rows], object)
    label = np.array([r[1] for r in rows], object)
    says = np.isin(alone, SAYS_MASK)
    wrong_alone = alone != truth if truth is not None else None
    unknown = label == UNKNOWN_MASK
    for measure, column in (("luma", 2), ("sharpness", 3), ("size", 4)):
        values = np.array([r[column] for r in rows], np.float64)
        out[f"per_frame_by_{measure}"] = quality_bin_rows(
            values, QUALITY_BINS[measure], says_mask=says, wrong=wrong_alone,
            shown_unknown=unknown)
    return out


def _unknown_why(res: dict[str, Any]) -> str:
    """``": 34 fail the quality rule, 32 contested"``, or "" when none is contested."""
    contested = res.get("unknown_contested", 0)
    if not contested:
        return ""
    return (f": {res['unknown_face_frames'] - contested} fail the quality rule, {contested} "
            "contested, the classifier changing its mind")


def format_tracking(res: dict[str, Any]) -> str:
    """Markdown report of :func:`evaluate_tracking`."""
    lines = [
        f"# Smoothed mask labels against the per-frame classifier: {Path(res['video']).name}",
        "",
        f"{res['frames']} frames, {res['face_frames']} labelled face-frames in "
        f"{res['tracks']} tracks; "
        f"the engine called the classifier {res['classifier_calls']} times "
        f"(per-frame classification: {res['face_frames']}).",
        "",
        f"Quality rule: {rule_text(res['config'].get('quality'))}; "
        f"{res['unknown_face_frames']} face-frames shown as unknown (cannot judge, "
        f"{pct(res['unknown_share'])}{_unknown_why(res)}), {res['judged_face_frames']} judged.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| agreement, all judged face-frames | {pct(res['agreement'])} |",
        f"| agreement where the per-frame top probability >= {res['confident']} "
        f"({res['confident_face_frames']} face-frames) | {pct(res['agreement_confident'])} |",
        f"| single-frame flickers, shown labels | {res['flickers_shown']} |",
        f"| single-frame flickers, per-frame labels | {res['flickers_per_frame']} |",
        "",
        "Per-frame label (rows) against the shown label (columns):",
        "",
        "| per-frame \\ shown | " + " | ".join(SHOWN_MASK_STATES) + " |",
        "|---|" + "---|" * len(SHOWN_MASK_STATES),
    ]
    confusion = res["confusion_per_frame_vs_shown"]
    for a in MASK_CLASSES:
        lines.append(f"| {a} | " + " | ".join(str(confusion[a].get(b, 0))
                                               for b in SHOWN_MASK_STATES) + " |")
    shown = res["shown"]
    lines += ["", "Shown labels in all: "
              + ", ".join(f"{b} {n} ({pct(n / max(res['face_frames'], 1))})"
                          for b, n in shown.items()) + "."]
    judged = res["judged_face_frames"]
    lines += ["", f"Judged shown labels that say a mask: {res['shown_says_mask']} of {judged} "
              f"({pct(res['shown_says_mask_share'])})"
              + (f"; wrong (every face is {res['truth']}): {res['shown_wrong']} "
                 f"({pct(res['shown_wrong_share'])})" if res["truth"] else "") + "."]
    for measure, title in (("luma", "mean luma of the face (0-255)"),
                           ("sharpness", "sharpness (Laplacian variance, 64 px grey face)"),
                           ("size", "face size (shorter box side, px)")):
        lines += ["", f"Per-frame classifier by {title}:", ""]
        lines += format_quality_rows(res[f"per_frame_by_{measure}"], bool(res["truth"]))
    lines += ["", "Tracks with the most disagreement (judged face-frames):", "",
              "| track | face-frames | shown unknown | disagree |", "|---|---|---|---|"]
    lines += [f"| {r['track']} | {r['face_frames']} | {r['unknown']} | {r['disagree']} |"
              for r in res["disagreeing_tracks"] if r["disagree"]]
    return "\n".join(lines) + "\n"


def format_quality_rows(rows: list[dict[str, Any]], with_truth: bool) -> list[str]:
    """Markdown table of :func:`~maskwatch.evaluate.report.quality_bin_rows`."""
    head = "| bin | face-frames | per-frame says a mask |"
    head += " per-frame wrong |" if with_truth else ""
    head += " shown unknown |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in rows:
        cells = [r["bin"], str(r["n"]), f"{r['says_mask']} ({pct(r['says_mask_share'])})"]
        if with_truth:
            cells.append(f"{r['wrong']} ({pct(r['wrong_share'])})")
        cells.append(f"{r['shown_unknown']} ({pct(r['shown_unknown_share'])})")
        lines.append("| " + " | ".join(cells) + " |")
    return lines
