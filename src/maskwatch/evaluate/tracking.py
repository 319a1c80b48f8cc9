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
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

from maskwatch.evaluate.report import json_safe, pct
from maskwatch.types import MASK_CLASSES

log = logging.getLogger(__name__)


def single_frame_flickers(labels: list[str]) -> int:
    """Labels that differ from both neighbours, which agree with each other.

    Example:
        >>> single_frame_flickers(["a", "b", "a", "a", "c", "c", "a"])
        1
    """
    return sum(1 for i in range(1, len(labels) - 1)
               if labels[i] != labels[i - 1] and labels[i - 1] == labels[i + 1])


def evaluate_tracking(video: str | Path, out: str | Path | None = None, *, confident: float = 0.8,
                      progress: bool = True, **config: Any) -> dict[str, Any]:
    """Run the live engine on a video and compare its labels with per-frame ones.

    Args:
        video: a video file (anything :func:`maskwatch.sources.open_source` reads).
        out: folder for ``tracking.json`` and ``tracking.md`` (None: no files).
        confident: per-frame top probability, 0-1, above which a frame counts as one
            where the classifier is sure.
        progress: show a progress bar.
        config: :class:`~maskwatch.pipeline.PipelineConfig` overrides.

    Returns:
        The figures as a JSON-ready dict.
    """
    from tqdm import tqdm

    from maskwatch.pipeline import Pipeline, PipelineConfig
    from maskwatch.sources import Frame, open_source

    engine = Pipeline(PipelineConfig(**config))
    clf = engine.classifier
    order = [clf.class_names.index(c) for c in MASK_CLASSES]
    shown: dict[int, list[str]] = defaultdict(list)
    per_frame: dict[int, list[str]] = defaultdict(list)
    ended: list[Any] = []
    n = agree = n_conf = agree_conf = frames = 0
    confusion = {a: dict.fromkeys(MASK_CLASSES, 0) for a in MASK_CLASSES}
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
            probs = clf.predict_crops(clf.crops(item.image, result.faces))[:, order]
            for tid, label, p in zip(result.faces.track_ids.tolist(), result.faces.mask_labels,
                                     probs, strict=True):
                if label is None:
                    continue
                truth = MASK_CLASSES[int(p.argmax())]
                shown[tid].append(label)
                per_frame[tid].append(truth)
                confusion[truth][label] += 1
                n += 1
                agree += truth == label
                if p.max() >= confident:
                    n_conf += 1
                    agree_conf += truth == label
        bar.close()
    ended += engine.finish()
    classified = sum(t.classifications for t in ended)
    res = {
        "video": str(video),
        "frames": frames,
        "face_frames": n,
        "tracks": len(shown),
        "agreement": agree / n if n else None,
        "confident": confident,
        "confident_face_frames": n_conf,
        "agreement_confident": agree_conf / n_conf if n_conf else None,
        "flickers_shown": sum(single_frame_flickers(v) for v in shown.values()),
        "flickers_per_frame": sum(single_frame_flickers(v) for v in per_frame.values()),
        "classifier_calls": classified,
        "confusion_per_frame_vs_shown": confusion,
        "disagreeing_tracks": sorted(
            ({"track": t, "face_frames": len(v),
              "disagree": sum(a != b for a, b in zip(v, per_frame[t], strict=True))}
             for t, v in shown.items()), key=lambda r: -r["disagree"])[:10],
        "config": json_safe(asdict(engine.config)),
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "tracking.json").write_text(json.dumps(json_safe(res), indent=2) + "\n")
        (out / "tracking.md").write_text(format_tracking(res))
    return res


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
        "| figure | value |",
        "|---|---|",
        f"| agreement, all face-frames | {pct(res['agreement'])} |",
        f"| agreement where the per-frame top probability >= {res['confident']} "
        f"({res['confident_face_frames']} face-frames) | {pct(res['agreement_confident'])} |",
        f"| single-frame flickers, shown labels | {res['flickers_shown']} |",
        f"| single-frame flickers, per-frame labels | {res['flickers_per_frame']} |",
        "",
        "Per-frame label (rows) against the shown label (columns):",
        "",
        "| per-frame \\ shown | " + " | ".join(MASK_CLASSES) + " |",
        "|---|" + "---|" * len(MASK_CLASSES),
    ]
    confusion = res["confusion_per_frame_vs_shown"]
    for a in MASK_CLASSES:
        lines.append(f"| {a} | " + " | ".join(str(confusion[a][b]) for b in MASK_CLASSES) + " |")
    shown = {b: sum(confusion[a][b] for a in MASK_CLASSES) for b in MASK_CLASSES}
    lines += ["", "Shown labels in all: "
              + ", ".join(f"{b} {n} ({pct(n / max(res['face_frames'], 1))})"
                          for b, n in shown.items()) + "."]
    lines += ["", "Tracks with the most disagreement:", "", "| track | face-frames | disagree |",
              "|---|---|---|"]
    lines += [f"| {r['track']} | {r['face_frames']} | {r['disagree']} |"
              for r in res["disagreeing_tracks"] if r["disagree"]]
    return "\n".join(lines) + "\n"
