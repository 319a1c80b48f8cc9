"""Side by side: several ``maskwatch evaluate --task recognition`` runs in one report.

Each run is a folder (or its ``recognition.json``) written by the evaluation with the
same protocol (dataset, ``k``, seed, mask templates); the report puts their headline
figures in one table per matching scheme and checks that the protocols agree::

    python -m maskwatch.evaluate.compare_recognition \\
        "dlib + HOG (face_recognition)=runs/rec-dlib-hog" \\
        "dlib on YuNet faces=runs/rec-dlib-yunet" \\
        "SFace on YuNet faces=docs/results/recognition.json" --out docs/results/recognition-dlib

writes ``recognition-dlib.md`` (the tables, then each run's full report but the last)
and ``recognition-dlib.json`` (the figures of the tables and every run's full results).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from maskwatch.evaluate.recognition import format_recognition
from maskwatch.evaluate.report import json_safe, pct

#: Settings that must be equal for runs to be compared.
PROTOCOL_KEYS = ("people", "k", "synthetic_masks", "seed", "probe_face_px", "calibration_fpir")


def load_run(path: str | Path) -> dict[str, Any]:
    """A run's results: ``path`` is its report folder or its ``recognition.json``."""
    p = Path(path)
    if p.is_dir():
        p = p / "recognition.json"
    return json.loads(p.read_text())


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of one run, per scheme (``plain``, ``mask_aware``)."""
    cs, osr, probes = results["closed_set"], results.get("open_set", {}), results["probes"]
    emb = results.get("embedder") or {"name": "sface-2021dec-int8", "version": "1"}
    out: dict[str, Any] = {
        "embedder": f"{emb['name']} v{emb['version']}",
        "detector": results.get("detector", "yunet"),
        "failed_to_detect": {name: p["failed_to_detect"] for name, p in probes.items()},
        "probe_photos": {name: p["photos"] for name, p in probes.items()},
        "timing_ms": results.get("timing_ms") or {},
        "enrolment_failures": len(results["enrolment"]["failures"]),
        "schemes": {},
    }
    small = f"masked_{results['probe_face_px']}px" if results.get("probe_face_px") else None
    for scheme in ("plain", "mask_aware"):
        row: dict[str, Any] = {}
        for name in ("unmasked", "masked"):
            r = cs[name][scheme]
            row[f"{name}_rank1"] = r["rank1"]
            row[f"{name}_rank1_with_ftd"] = r["rank1_with_ftd"]
            for far in ("1e-3", "1e-2"):
                row[f"{name}_tar_far{far}"] = r["tar"].get(far, {}).get("tar")
        if small and small in cs:
            row["small_masked_rank1_with_ftd"] = cs[small][scheme]["rank1_with_ftd"]
        if "masked" in osr:
            row["open_set_masked_known_correct"] = osr["masked"][scheme]["pooled"]["known_correct"]
            row["open_set_masked_unknown_named"] = osr["masked"][scheme]["pooled"]["unknown_named"]
        rec = (results.get("recommended_thresholds") or {}).get(scheme)
        if rec:
            row["threshold"], row["masked_threshold"] = rec["threshold"], rec["masked_threshold"]
        out["schemes"][scheme] = row
    return out


def check_protocols(runs: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """ValueError naming the setting when the runs' protocols differ."""
    first_label, first = runs[0]
    for label, res in runs[1:]:
        for key in PROTOCOL_KEYS:
            if res.get(key) != first.get(key):
                raise ValueError(f"{label!r} and {first_label!r} differ in {key}: "
                                 f"{res.get(key)} / {first.get(key)}")
        if bool(res.get("mask_templates")) != bool(first.get("mask_templates")):
            raise ValueError(f"{label!r} and {first_label!r} differ in the use of mask templates")
        for name, p in res["probes"].items():
            if first["probes"].get(name, {}).get("photos") != p["photos"]:
                raise ValueError(f"{label!r} and {first_label!r} have different {name} "
                                 "probe photos")


def _table(labels: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    out = ["| | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    out += [f"| {name} | " + " | ".join(vals) + " |" for name, vals in rows]
    return out + [""]


def format_comparison(runs: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """Markdown: protocol, one table per scheme, detection and speed."""
    labels = [label for label, _ in runs]
    sums = [summary(res) for _, res in runs]
    first = runs[0][1]
    px = first.get("probe_face_px")
    out = [
        "# Recognition under masks: dlib (face_recognition) beside SFace",
        "",
        f"Same protocol for every column (`maskwatch evaluate --task recognition`): "
        f"{first['people']} LFW people, the first {first['k']} photos of each enrolled "
        f"({first['synthetic_masks']} synthetic-mask templates per photo), the other photos "
        "probe as they are and wearing a synthetic mask (other styles than enrolment"
        + (", a third from MaskTheFace templates" if first.get("mask_templates") else "")
        + "). YuNet places the probes' masks, so every column sees the same probe images; the "
        "detector of the column must then find the face again, or the probe is a failure to detect "
        "(FTD). Rank-1 *with FTD* counts those failures as errors, as a user would see them; the "
        "other figures are over the probes the detector found.",
        "",
        "| column | embedder | detector |",
        "|---|---|---|",
    ]
    out += [f"| {label} | {s['embedder']} | {s['detector']} |"
            for label, s in zip(labels, sums, strict=True)]
    out.append("")
    names = [("unmasked", "unmasked"), ("masked", "masked")]
    if px:
        names = [("unmasked", "unmasked"), (f"unmasked_{px}px", f"unmasked, face {px} px"),
                 ("masked", "masked"), (f"masked_{px}px", f"masked, face {px} px")]
    out += ["## Detection", ""]
    rows = []
    for key, text in names:
        rows.append((f"probes not found ({text}), of {sums[0]['probe_photos'].get(key, 'n/a')}",
                     [str(s["failed_to_detect"].get(key, "n/a")) for s in sums]))
    rows.append(("enrolment photos without a face", [str(s["enrolment_failures"]) for s in sums]))
    out += _table(labels, rows)

    for scheme, title in (("plain", "Plain templates (every probe against the enrolment photos "
                                    "as they are)"),
                          ("mask_aware", "Mask-aware matching (masked probes against "
                                         "synthetic-mask templates, as maskwatch enrols and "
                                         "matches)")):
        out += [f"## {title}", ""]
        rows = []
        for key, text in (("unmasked_rank1", "unmasked rank-1"),
                          ("unmasked_rank1_with_ftd", "unmasked rank-1 with FTD"),
                          ("masked_rank1", "masked rank-1"),
                          ("masked_rank1_with_ftd", "masked rank-1 with FTD"),
                          ("masked_tar_far1e-3", "masked TAR at FAR 1e-3"),
                          ("masked_tar_far1e-2", "masked TAR at FAR 1e-2"),
                          ("unmasked_tar_far1e-3", "unmasked TAR at FAR 1e-3"),
                          ("unmasked_tar_far1e-2", "unmasked TAR at FAR 1e-2"),
                          ("small_masked_rank1_with_ftd",
                           f"masked rank-1 with FTD, face {px} px"),
                          ("open_set_masked_known_correct",
                           "open set: known masked probes named right"),
                          ("open_set_masked_unknown_named",
                           "open set: unknown masked probes named")):
            if any(key in s["schemes"][scheme] for s in sums):
                rows.append((text, [pct(s["schemes"][scheme].get(key), 2) for s in sums]))
        if any("threshold" in s["schemes"][scheme] for s in sums):
            rows.append(("operating threshold, unmasked / masked (cosine)",
                         [f"{s['schemes'][scheme].get('threshold', 'n/a')} / "
                          f"{s['schemes'][scheme].get('masked_threshold', 'n/a')}" for s in sums]))
        out += _table(labels, rows)

    out += ["## Speed (this run, 2-core CPU shared with other work)", ""]
    rows = [("median ms per detection (LFW photo, 250x250)",
             [_ms(s["timing_ms"].get("detect_median")) for s in sums]),
            ("median ms per face embedding",
             [_ms(s["timing_ms"].get("embed_per_face_median")) for s in sums])]
    out += _table(labels, rows)
    return "\n".join(out) + "\n"


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def write_comparison(runs: Sequence[tuple[str, dict[str, Any]]], out: str | Path,
                     full_reports: bool = True, notes: str = "") -> Path:
    """Write ``<out>.md`` and ``<out>.json``; returns the markdown path. ``notes``
    (markdown) goes after the tables."""
    check_protocols(runs)
    base = Path(out)
    base.parent.mkdir(parents=True, exist_ok=True)
    md = format_comparison(runs)
    if notes:
        md += "\n" + notes.strip() + "\n"
    if full_reports:
        for label, res in runs[:-1]:
            body = format_recognition(res).split("\n", 1)[1]  # without its title
            body = "\n".join("#" + line if line.startswith("#") else line
                             for line in body.splitlines())
            md += f"\n# Full report: {label}\n{body}\n"
    path = base.with_suffix(".md")
    path.write_text(md)
    base.with_suffix(".json").write_text(json.dumps(json_safe({
        "columns": [{"label": label, **summary(res)} for label, res in runs],
        "results": {label: res for label, res in runs},
    }), indent=1))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m maskwatch.evaluate.compare_recognition",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", metavar="LABEL=RUN",
                    help="column label and report folder or json")
    ap.add_argument("--out", required=True,
                    help="output path without extension (.md and .json are written)")
    ap.add_argument("--no-full", action="store_true",
                    help="tables only, without each run's full report")
    ap.add_argument("--notes", help="markdown file to put after the tables (reading notes)")
    args = ap.parse_args(argv)
    runs = []
    try:
        for item in args.runs:
            label, sep, path = item.partition("=")
            if not sep:
                raise ValueError(f"{item!r}: expected LABEL=RUN")
            runs.append((label, load_run(path)))
        notes = Path(args.notes).read_text() if args.notes else ""
        path = write_comparison(runs, args.out, full_reports=not args.no_full, notes=notes)
    except (OSError, ValueError, KeyError) as exc:
        print(f"compare_recognition: error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
